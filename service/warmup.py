"""Warm the harm classifier before the server reports ready.

``warm_up(scorer)`` scores one text prompt and one small rendered text image through the backend, so
the first real request does not pay for lazy initialisation: the runtime's first run of a graph, the
OCR engine's construction and its OpenVINO compilation (about a second on 2 cores together). It
returns the seconds spent; a failure is logged with its traceback and re-raised as ``RuntimeError``.
The app then stops at start under ``--fail-policy closed`` (a guard that cannot score would refuse
requests) and serves anyway under ``open`` (those requests pass and are counted as guard failures).
"""

from __future__ import annotations

import logging
import time

from models.backends import GuardInput, ScoringBackend, render_text_image

log = logging.getLogger("spaguard.warmup")


def _text_image() -> bytes:
    """A 320x80 PNG with two words on it: enough for the detector and recogniser to both run."""
    return render_text_image(["warm up"], (320, 80), 36, origin=(12, 16))


def warm_up(scorer: ScoringBackend) -> float:
    """Score a text item and an image item once (see module docstring); returns the seconds taken."""
    start = time.perf_counter()
    try:
        # One item per call: any max_batch_size (≥ 1) takes it.
        for item in (GuardInput("Hello, how are you?"), GuardInput("What does this say?", images=(_text_image(),))):
            scorer.score([item])
    except Exception as exc:  # noqa: BLE001 - any backend/OCR failure; logged, then surfaced as one error type
        log.exception("guard warm-up failed")
        raise RuntimeError(f"guard warm-up failed: {exc}") from exc
    seconds = time.perf_counter() - start
    log.info("guard warm-up took %.2f s", seconds)
    return seconds
