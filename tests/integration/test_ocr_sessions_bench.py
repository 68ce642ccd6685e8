"""benchmarks/ocr_sessions_bench.py runs both session kinds on the real OCR models and reads the page."""

from __future__ import annotations

import json

from benchmarks import ocr_sessions_bench as bench


def test_both_arms_read_the_page_and_report_stage_times(tmp_path) -> None:
    out = tmp_path / "ocr.json"
    assert bench.main(["--calls", "1", "--threads", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    arms = {r["arm"]: r for r in doc["rows"]}
    assert len(arms) == 2 and any("rebuilt" in a for a in arms) and any("spinning)" in a for a in arms)
    for row in arms.values():
        assert "bomb" in row["text"].lower()  # both engines really read the rendered words
        assert 0 < row["det_p50_ms"] < row["total_p50_ms"] and 0 < row["rec_p50_ms"] < row["total_p50_ms"]
