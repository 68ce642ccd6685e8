"""benchmarks/tenancy_bench.py runs both arms for real (a short run) and reports what docs/tenancy.md quotes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.scripts import load_benchmark

bench = load_benchmark("tenancy_bench")


def test_both_arms_answer_and_the_report_has_the_quoted_figures(tmp_path: Path) -> None:
    report = asyncio.run(bench.run(rounds=1, n=5, warmup=1))
    (row,) = report["rows"]
    assert row["plain"]["p50_ms"] > 0 and row["tenancy"]["p50_ms"] > 0
    assert report["median_added_p50_ms"] == row["added_p50_ms"]
    assert report["requests_per_round"] == 5
    out = tmp_path / "t.json"
    assert bench.main(["--rounds", "1", "--requests", "3", "--warmup", "0", "--out", str(out)]) == 0
    assert set(json.loads(out.read_text())) >= {"rows", "median_added_p50_ms", "median_ratio_p50", "machine"}
