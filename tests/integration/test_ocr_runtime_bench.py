"""benchmarks/ocr_runtime_bench.py: ORT and OpenVINO readers on the same pages, both passes, text compared."""

from __future__ import annotations

import json

from benchmarks import ocr_runtime_bench as bench


def test_every_arm_reads_both_passes_and_reports_text_agreement(tmp_path, capsys) -> None:
    out = tmp_path / "ocr_runtime.json"
    assert bench.main(["--pages", "3", "--threads", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    assert [(r["shapes"], r["arm"]) for r in rows] == [(s, a) for s in ("new", "seen") for a in bench.ARMS]
    for r in rows:
        assert 0 < r["p50_ms"] <= r["p95_ms"] and r["word_recall"] > 0.5  # the readers really read the pages
        assert 0 <= r["same_text_as_ort"] <= 1
    assert all(r["p50_vs_ort"] == 1.0 and r["same_text_as_ort"] == 1.0 for r in rows if r["arm"] == "ort")
    assert 1 <= doc["distinct_detector_sizes"] <= 3 and "| seen | ov-det-rec |" in capsys.readouterr().out


def test_pages_are_seeded_and_carry_their_text() -> None:
    a, b = bench.make_pages(4, seed=7), bench.make_pages(4, seed=7)
    assert a == b and all(png.startswith(b"\x89PNG") and text.strip() for png, text in a)
    assert bench.make_pages(4, seed=8) != a
