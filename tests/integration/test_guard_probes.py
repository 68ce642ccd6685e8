"""training.guard.probes: every probe set is scored through OCR and counted against the model's own threshold."""

from __future__ import annotations

import json

import pytest

from tests.e2e.serve_process import tiny_guard_artifact
from training.guard import probes


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))


def test_counts_follow_each_models_threshold(tmp_path, capsys) -> None:
    flag_all = tiny_guard_artifact(tmp_path, prompt=True, response=False)  # threshold 0: every probe flagged
    flag_none = tiny_guard_artifact(tmp_path, prompt=False, response=False)  # threshold 1: none
    out = tmp_path / "probes.json"
    assert probes.main(["--model", str(flag_all), "--model", str(flag_none), "--threads", "1", "--json", str(out)]) == 0
    everything, nothing = json.loads(out.read_text())
    sizes = {"text_unsafe": len(probes.TEXT_UNSAFE), "text_safe": len(probes.TEXT_SAFE)}
    sizes |= {f"typo{c}_{k}": 12 for c in range(len(probes.TYPO_CARRIERS)) for k in ("unsafe", "safe")}
    assert {k: v["n"] for k, v in everything["sets"].items()} == sizes
    assert all(v["flagged"] == v["n"] for v in everything["sets"].values())
    assert all(v["flagged"] == 0 for v in nothing["sets"].values())
    assert "| typo1_unsafe | 12/12 | 0/12 |" in capsys.readouterr().out


def test_typographic_pages_carry_their_phrase() -> None:
    from models.ocr import OcrReader
    from models.ocr_config import OcrConfig

    text = OcrReader(OcrConfig(threads=1)).read(probes._page("Steps to grow tomatoes."))
    assert {"steps", "grow", "tomatoes."} <= set(text.lower().split())
