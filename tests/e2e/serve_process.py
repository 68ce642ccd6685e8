"""Run ``spaguard serve`` as a subprocess for end-to-end tests, and build guard artifacts for it.

``spaguard_server(args)`` starts the real CLI on a free port, waits for ``GET /health`` to answer
200 and yields the base URL; on exit it sends SIGINT (graceful shutdown) and reaps the process.
``tiny_guard_artifact(out, prompt, response)`` writes a tiny random classifier artifact whose
calibration flags every prompt/response (threshold 0) or none (threshold 1): it tests the wiring
through the real backend code, not classification quality. ``SHIPPED_ARTIFACT`` is the trained
default; tests that need real verdicts use it when it has been built.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from models.backends import DEFAULT_ARTIFACT
from service import launch

SHIPPED_ARTIFACT = DEFAULT_ARTIFACT
SPAGUARD = launch.SPAGUARD


def _env() -> dict[str, str]:
    return launch.offline_env(OMP_NUM_THREADS="1", SPAGUARD_THREADS="1")


def spaguard_server(args: list[str], log_path: Path, timeout_s: float = 180.0) -> AbstractContextManager[str]:
    """``spaguard serve ARGS`` on 127.0.0.1:<free port>; yields ``http://127.0.0.1:<port>``."""
    return launch.spaguard_server(args, log_path, timeout_s=timeout_s, env=_env())


def tiny_guard_artifact(out: Path, prompt: bool, response: bool) -> Path:
    """A tiny random classifier artifact whose calibration flags every prompt (``prompt``) or
    none, and every response (``response``) or none (threshold 0 or 1)."""
    import torch

    from models.artifact import Calibration, ClassifierConfig
    from models.classifier import GuardClassifier
    from models.encoders import build_tiny_text_encoder

    encoder = out / "encoder"
    if not (encoder / "config.json").exists():
        build_tiny_text_encoder(encoder)
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=str(encoder), head_hidden=16, max_length=64))
    calibration = Calibration.identity(model.config.node_keys)
    calibration.threshold = {"prompt": 0.0 if prompt else 1.0, "response": 0.0 if response else 1.0}
    artifact = out / f"flag_prompt{int(prompt)}_response{int(response)}"
    model.save(artifact, {"purpose": "e2e wiring test: thresholds forced, not a real guard"},
               calibration=calibration)
    return artifact
