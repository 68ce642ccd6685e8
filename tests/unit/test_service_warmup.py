"""service.warmup: one text and one image item reach the backend; a failure is one clear error."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from models.backends import GuardInput
from service.warmup import warm_up


class _Recorder:
    name = "recorder"

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[GuardInput]] = []
        self.fail = fail

    def score(self, batch: list[GuardInput]) -> list:
        self.batches.append(batch)
        if self.fail:
            raise OSError("ocr model file missing")
        return []


def test_scores_a_text_and_a_decodable_text_image() -> None:
    scorer = _Recorder()
    assert warm_up(scorer) >= 0
    assert [[bool(i.images) for i in b] for b in scorer.batches] == [[False], [True]]  # one item per call
    image = Image.open(io.BytesIO(scorer.batches[1][0].images[0]))
    lo, hi = image.convert("L").getextrema()
    assert image.size == (320, 80) and hi - lo > 100  # dark strokes on white: drawn text, not a blank page


def test_failure_is_raised_as_one_error_with_the_cause(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="guard warm-up failed: ocr model file missing"):
        warm_up(_Recorder(fail=True))
    assert "guard warm-up failed" in caplog.text
