"""``benchmarks/bench_dpo.py`` on CPU with the tiny shape: both variants run, the table and JSON are
written, and the tuned settings leave the fixed-batch loss unchanged (same init, same data)."""

from __future__ import annotations

import json

import pytest

from tests.scripts import load_benchmark

bench_dpo = load_benchmark("bench_dpo")


def test_tiny_bench_runs_both_variants_with_the_same_loss(tmp_path):
    argv = ["--tiny", "--steps", "2", "--warmup", "1", "--batch-size", "2", "--text-tokens", "40",
            "--out", str(tmp_path)]
    assert bench_dpo.main(argv) == 0
    report = json.loads((tmp_path / "bench_dpo.json").read_text())
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"trl_default", "tuned"}
    for r in rows.values():
        assert r["steps_timed"] == 1 and r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1
    assert rows["tuned"]["fixed_batch_loss"] == pytest.approx(rows["trl_default"]["fixed_batch_loss"], abs=1e-5)
    assert report["meta"]["peak_tflops_measured"] > 0
    assert (tmp_path / "bench_dpo.csv").read_text().startswith("variant,")


def test_bench_rejects_unknown_variants_and_too_few_steps(tmp_path):
    with pytest.raises(SystemExit, match="unknown variants"):
        bench_dpo.main(["--tiny", "--variants", "fast", "--out", str(tmp_path)])


@pytest.mark.gpu
def test_7b_shape_bench_on_gpu(tmp_path):
    argv = ["--steps", "4", "--warmup", "2", "--variants", "trl_default,tuned", "--out", str(tmp_path)]
    assert bench_dpo.main(argv) == 0
    rows = json.loads((tmp_path / "bench_dpo.json").read_text())["results"]
    assert abs(rows[1]["loss_delta_vs_first"]) < 5e-2  # bf16 noise
