"""Score guard examples exactly as the server does: the same ``Segmenter``, backend and aggregation.

Contract
--------
``score_examples(backend, segmenter, examples, task)`` returns one ``Scored`` per example, in order:

* prompt task: ``segmenter.prompt_items(example.prompt_input())`` (windows, sentence chunks, decoded
  variants, images on one item), every item scored by ``backend``; then, for an example with images that
  is not yet flagged, ``segmenter.ocr_items`` of the OCR text found; merged by ``segmenter.merge`` (sentence
  chunks count only at its ``chunk_threshold``). An example with
  nothing to score (empty text, no image) gets ``nothing_to_score``, as the server's guard does;
* response task: the prompt is scored first when it has images (the server takes the response's context
  OCR text from the prompt verdict), then ``segmenter.response_items(response_context(prompt, ocr),
  response)``.

This is the code path of ``service.guard.Guard.check_input`` / ``check_output`` minus the batcher and its
early stop (the server stops scoring a prompt at the first flagged slice of 8 items, so its flag is the
same as here, its reported probability can be lower). Items from many examples are scored together in
batches of ``batch_size``; ``latency_ms`` is each example's share of the batch wall time it used.
``progress`` (if given) is called as ``progress(done_items, total_items)`` after each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from models.backends import GuardInput, Piece, ScoringBackend, Segmenter, Verdict, nothing_to_score, response_context
from training.guard.guard_data import GuardExample


@dataclass(frozen=True)
class Scored:
    """The server's verdict for one example, with how many items it took and what they cost."""

    verdict: Verdict
    n_items: int
    latency_ms: float


def _score_flat(backend: ScoringBackend, owners: list[list[GuardInput]], batch_size: int,
                progress: Callable[[int, int], None] | None) -> tuple[list[list[Verdict]], list[float]]:
    flat = [(o, item) for o, items in enumerate(owners) for item in items]
    size = max(1, min(batch_size, backend.max_batch_size))
    verdicts: list[list[Verdict]] = [[] for _ in owners]
    cost_ms = [0.0] * len(owners)
    for start in range(0, len(flat), size):
        batch = flat[start:start + size]
        t0 = time.perf_counter()
        got = backend.score([item for _, item in batch])
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        if len(got) != len(batch):
            raise RuntimeError(f"backend returned {len(got)} verdicts for {len(batch)} inputs")
        for (owner, _), v in zip(batch, got):
            verdicts[owner].append(v)
            cost_ms[owner] += elapsed_ms / len(batch)
        if progress is not None:
            progress(min(start + size, len(flat)), len(flat))
    return verdicts, cost_ms


def score_examples(backend: ScoringBackend, segmenter: Segmenter, examples: Sequence[GuardExample], task: str,
                   batch_size: int = 32, progress: Callable[[int, int], None] | None = None) -> list[Scored]:
    """One ``Scored`` per example for ``task`` ("prompt" or "response"); see the module docstring."""
    if task not in ("prompt", "response"):
        raise ValueError(f"task must be 'prompt' or 'response', got {task!r}")
    ocr = [""] * len(examples)
    prompt_cost = [0.0] * len(examples)
    if task == "response":
        with_images = [i for i, ex in enumerate(examples) if ex.images]
        if with_images:
            scored = score_examples(backend, segmenter, [examples[i] for i in with_images], "prompt", batch_size)
            for i, s in zip(with_images, scored):
                ocr[i], prompt_cost[i] = s.verdict.ocr_text, s.latency_ms
        pieces = [[Piece(item) for item in segmenter.response_items(response_context(ex.prompt, ocr[i]),
                                                                      ex.response or "")]
                  for i, ex in enumerate(examples)]
    else:
        pieces = [segmenter.prompt_pieces(ex.prompt_input()) for ex in examples]
    verdicts, cost = _score_flat(backend, [[p.item for p in ps] for ps in pieces], batch_size, progress)
    if task == "prompt":  # the server's second round: decoded variants of the OCR text, unless already flagged
        firsts = [segmenter.merge(ps, v) if v else None for ps, v in zip(pieces, verdicts)]
        second = [[Piece(i) for i in segmenter.ocr_items(ex.prompt, f.ocr_text)] if ex.images and f and
                  not f.flagged else [] for ex, f in zip(examples, firsts)]
        if any(second):
            more, more_cost = _score_flat(backend, [[p.item for p in ps] for ps in second], batch_size, None)
            for i, extra in enumerate(second):
                verdicts[i] += more[i]
                pieces[i] = pieces[i] + extra
                cost[i] += more_cost[i]
    return [Scored(segmenter.merge(ps, v) if v else nothing_to_score(task), len(ps), c + p)
            for v, ps, c, p in zip(verdicts, pieces, cost, prompt_cost)]
