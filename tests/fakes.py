"""Test doubles for the service: a scripted ``ScoringBackend``.

``FakeBackend`` flags an item when one of its trigger words occurs in the text it is asked about
(the response for response items, the prompt otherwise; image bytes are searched too, so a test
can "write" a trigger into an image). ``max_chars`` mimics a model's input truncation. It records every batch it sees, can sleep to simulate
inference time, and can be switched to fail or to report itself unhealthy.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from models.backends import GuardInput, Verdict

TRIGGER_CATEGORY = "Violence"


@dataclass
class FakeBackend:
    triggers: tuple[str, ...] = ("bomb", "poison")
    name: str = "fake"
    max_batch_size: int = 64
    delay_s: float = 0.0
    fail: bool = False
    healthy: bool = True
    max_chars: int | None = None  # like a real model's truncation: only the first N chars count
    batches: list[list[GuardInput]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def health(self) -> bool:
        return self.healthy

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        if len(batch) > self.max_batch_size:
            raise ValueError(f"batch of {len(batch)} > max_batch_size {self.max_batch_size}")
        with self._lock:
            self.batches.append(list(batch))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("fake backend failure")
        return [self._verdict(item) for item in batch]

    def _verdict(self, item: GuardInput) -> Verdict:
        haystack = (item.response if item.response is not None else item.text).lower()
        haystack = haystack[: self.max_chars] if self.max_chars else haystack
        image_text = b" ".join(item.images).lower() if item.response is None else b""
        hit = any(t in haystack or t.encode() in image_text for t in self.triggers)
        prob = 0.97 if hit else 0.02
        categories = {TRIGGER_CATEGORY: prob} if hit else {}
        return Verdict(
            task=item.task, unsafe_prob=prob, flagged=hit, categories=categories,
            scores={TRIGGER_CATEGORY: prob},
        )

    @property
    def items_seen(self) -> int:
        return sum(len(b) for b in self.batches)


def png_bytes(size: tuple[int, int] = (8, 8), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small valid PNG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(data: bytes | None = None) -> str:
    import base64

    return "data:image/png;base64," + base64.b64encode(data or png_bytes()).decode()
