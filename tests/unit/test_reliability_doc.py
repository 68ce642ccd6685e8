"""The docs/reliability.md generator (tests/reliability.py): rows render by area, the data comment
round-trips, and rows of tests that no longer exist are dropped (and only those)."""

from __future__ import annotations

from pathlib import Path

from tests import reliability


def _row(area: str, case: str, result: str = "pass") -> dict:
    return {"area": area, "case": case, "expected": "400 | 413", "result": result, "seconds": 0.1,
            "suite": "fast", "ran": "2026-01-01 00:00 UTC"}


def test_render_groups_by_area_escapes_cells_and_keeps_its_data(tmp_path: Path, monkeypatch) -> None:
    me = "tests/unit/test_reliability_doc.py"
    rows = {
        f"{me}::test_render_groups_by_area_escapes_cells_and_keeps_its_data": _row("b area", "one"),
        f"{me}::test_render_groups_by_area_escapes_cells_and_keeps_its_data[x]": _row("a area", "two", "fail"),
        # A parameter id holding "::" (an IPv6 form) still names this test: the slow suite's run keeps it.
        f"{me}::test_render_groups_by_area_escapes_cells_and_keeps_its_data[::ffff:7f00:1]": _row("a area", "v6"),
        f"{me}::test_no_such_test[::1]": _row("a area", "stale too"),
        "tests/unit/gone.py::test_deleted": _row("a area", "stale"),
    }
    text = reliability.render(rows, "now")
    assert text.index("## a area") < text.index("## b area")
    assert "400 \\| 413" in text and "**fail**" in text and "5 cases (1 fail, 4 pass)" in text
    doc = tmp_path / "reliability.md"
    doc.write_text(text)
    monkeypatch.setattr(reliability, "_ROOT", Path(__file__).resolve().parents[2])
    kept = reliability._previous_rows(doc)
    assert set(kept) == set(rows) - {"tests/unit/gone.py::test_deleted", f"{me}::test_no_such_test[::1]"}
    assert kept[f"{me}::test_render_groups_by_area_escapes_cells_and_keeps_its_data[x]"]["result"] == "fail"
