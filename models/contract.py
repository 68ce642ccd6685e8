"""The guard's contract: what is scored (``GuardInput``), the answer (``Verdict``), and who scores (``ScoringBackend``).

The ground floor of ``models/``: this module imports nothing of ours, and every other module may import it.
The service reaches these names through ``models.backends`` (STYLE.md section 1).

Contract
--------
* ``GuardInput`` is one thing to score: the prompt text (all user text parts joined), the prompt
  images (raw encoded bytes: PNG/JPEG/...), and optionally the assistant ``response`` text. With a
  ``response`` the item asks "is this response unsafe given this prompt?"; without, "is this
  prompt unsafe?".
* ``ScoringBackend.score(batch)`` returns exactly one ``Verdict`` per input, in order. It is
  blocking (CPU/GPU bound); callers run it off the event loop.
* ``Verdict.unsafe_prob`` is the calibrated probability of the task that was asked (prompt or
  response); ``flagged`` applies the artifact's shipped threshold. ``categories`` maps taxonomy
  node keys (see ``models.taxonomy``) to probabilities for the nodes that fired (above their own
  thresholds); ``scores`` holds every node's probability. How logits become these numbers:
  ``models.artifact`` (``calibration.json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class GuardInput:
    """One item to score. ``images`` are encoded image files (PNG, JPEG, WebP, GIF)."""

    text: str
    images: tuple[bytes, ...] = ()
    response: str | None = None

    @property
    def task(self) -> str:
        """``"response"`` when a response is attached, else ``"prompt"``."""
        return "prompt" if self.response is None else "response"


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer for one ``GuardInput``."""

    task: str  # "prompt" | "response"
    unsafe_prob: float
    flagged: bool
    categories: dict[str, float] = field(default_factory=dict)  # fired nodes only
    scores: dict[str, float] = field(default_factory=dict)  # every node
    ocr_text: str = ""  # text recovered from the images, if any (for audit logs)


@runtime_checkable
class ScoringBackend(Protocol):
    """A harm classifier runtime (torch, ONNX Runtime, ...)."""

    name: str
    max_batch_size: int

    def health(self) -> bool:
        """True when the backend can score right now."""
        ...

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        """Score ``batch`` (len ≤ ``max_batch_size``); one verdict per item, same order."""
        ...


def check_batch(batch: list[GuardInput], max_batch_size: int) -> None:
    """The checks every ``ScoringBackend.score`` makes before any work: at most ``max_batch_size`` items,
    each a ``GuardInput`` (ValueError / TypeError otherwise)."""
    if len(batch) > max_batch_size:
        raise ValueError(f"batch of {len(batch)} exceeds max_batch_size={max_batch_size}")
    for item in batch:
        if not isinstance(item, GuardInput):
            raise TypeError(f"score expects GuardInput items, got {type(item).__name__}")
