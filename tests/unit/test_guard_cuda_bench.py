"""guard_cuda_bench.py in its CPU test mode (tiny fp32 BERT), its static-buffer runner, its budget stop, the
CUDA-graph runner on a real GPU (skipped without one), and gpu_session.sh against `make gpu-wheels`."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

_ROOT = Path(__file__).resolve().parents[2]
# benchmarks/ is a folder of scripts, not a package: load the script as a module.
_SPEC = importlib.util.spec_from_file_location("guard_cuda_bench", _ROOT / "benchmarks" / "guard_cuda_bench.py")
gcb = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gcb)

_FAST = ["--reps", "3", "--peak-n", "64"]


def _tiny(device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, source = gcb.build_encoder(True, torch.device(device), dtype, seed=0)
    assert source.startswith("random init") and model.config._attn_implementation == "sdpa"
    return model, gcb.encoder_forward(model)


def _ids(batch: int, seed: int, device: str = "cpu") -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(1, gcb.TINY_SHAPE["vocab_size"], (batch, gcb.SEQ_LEN), generator=gen).to(device)


def test_cpu_tiny_run_writes_json_csv_and_markdown(tmp_path: Path) -> None:
    assert gcb.main(["--device", "cpu", "--tiny", "--batch-sizes", "4,1", *_FAST, "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "guard_cuda_bench.json").read_text())
    rows = doc["rows"]
    assert [(r["variant"], r["batch"]) for r in rows] == [
        ("eager-fp32", 1), ("static-fp32", 1), ("eager-fp32", 4), ("static-fp32", 4)]
    meta = doc["meta"]
    assert meta["flops_per_item"] == gcb.analytic_flops(gcb.TINY_SHAPE) and meta["peak_tflops_measured"] > 0
    assert meta["weights"].startswith("random init") and meta["stopped_early"] is False
    for r in rows:
        assert r["reps"] == 3 and 0 < r["p50_ms"] <= r["p95_ms"] and r["ok"] and r["rel_err"] <= 1e-6
        assert r["items_per_s"] == pytest.approx(1e3 * r["batch"] / r["p50_ms"])  # 3 reps: p50 is the median
        assert r["pct_peak"] == pytest.approx(100 * r["tflops"] / meta["peak_tflops_measured"])
        assert r["tflops"] == pytest.approx(r["items_per_s"] * meta["flops_per_item"] / 1e12)
    assert [r["x_eager"] for r in rows if r["variant"] == "eager-fp32"] == [1.0, 1.0]
    assert doc["skipped"][0]["variant"] == "ort-cuda" and doc["skipped"][0]["reason"]
    with (tmp_path / "guard_cuda_bench.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(gcb.COLUMNS) and len(table) == 4
    md = (tmp_path / "guard_cuda_bench.md").read_text()
    assert "| variant | batch | p50 ms |" in md and md.count("| static-fp32 |") == 2 and "ort-cuda" in md


def test_static_runner_returns_the_plain_forward_and_reuses_buffers() -> None:
    _, fn = _tiny()
    runner = gcb.StaticShapeRunner(fn, capture=False)
    with torch.inference_mode():
        x1, x2, y = _ids(2, 1), _ids(2, 2), _ids(3, 3)
        out1 = runner(x1)
        torch.testing.assert_close(out1, fn(x1), rtol=0, atol=1e-6)
        ptr_in, ptr_out = runner.static_input((2, gcb.SEQ_LEN)).data_ptr(), out1.data_ptr()
        out2 = runner(x2)  # same shape: same buffers, new values (a stale output would fail here)
        assert (out2.data_ptr(), runner.static_input((2, gcb.SEQ_LEN)).data_ptr()) == (ptr_out, ptr_in)
        torch.testing.assert_close(out2, fn(x2), rtol=0, atol=1e-6)
        assert not torch.allclose(out2, fn(x1))
        torch.testing.assert_close(runner(y), fn(y), rtol=0, atol=1e-6)
    assert runner.shapes == [(2, gcb.SEQ_LEN), (3, gcb.SEQ_LEN)]


def test_a_point_past_the_deadline_stops_after_the_minimum_reps() -> None:
    _, fn = _tiny()
    variants = {"eager-fp32": fn, "static-fp32": gcb.StaticShapeRunner(fn, capture=False)}
    ctx = {"device": torch.device("cpu"), "vocab": gcb.TINY_SHAPE["vocab_size"], "reps": 50, "seed": 0,
           "flops": 1e6, "peak": 1.0, "tol": 1e-5}
    rows = gcb.measure_batch(variants, 2, ctx, deadline=0.0, skipped=[])
    assert [(r["variant"], r["reps"]) for r in rows] == [("eager-fp32", gcb.MIN_REPS), ("static-fp32", gcb.MIN_REPS)]


def test_budget_stops_the_sweep_and_still_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that jumps an hour once the first point is measured: the rest of the sweep is past the budget.
    clock = SimpleNamespace(offset=0.0)
    monkeypatch.setattr(gcb, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + clock.offset))
    real_measure = gcb.measure_batch

    def measure_then_jump(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        rows = real_measure(*args, **kwargs)
        clock.offset += 3600
        return rows

    monkeypatch.setattr(gcb, "measure_batch", measure_then_jump)
    argv = ["--device", "cpu", "--tiny", "--batch-sizes", "1,2,4,8", "--budget-s", "600", *_FAST,
            "--out", str(tmp_path)]
    assert gcb.main(argv) == 0
    doc = json.loads((tmp_path / "guard_cuda_bench.json").read_text())
    assert doc["meta"]["stopped_early"] is True
    assert {r["batch"] for r in doc["rows"]} == {1}
    assert sorted(s["batch"] for s in doc["skipped"] if "budget" in s["reason"]) == [2, 4, 8]
    assert (tmp_path / "guard_cuda_bench.csv").read_text().count("\n") == 3  # header + 2 rows
    assert "budget of 600 s spent" in (tmp_path / "guard_cuda_bench.md").read_text()


def test_run_order_puts_the_issue_targets_first() -> None:
    assert gcb.run_order([2048, 1, 2, 4, 1024]) == [1, 2048, 2, 4, 1024]
    assert gcb.run_order([8]) == [8]


def test_analytic_flops_match_the_issue_figure() -> None:
    # The issue: 162k items/s at batch 2048 on 64 tokens is about 29 % of 789 TFLOP/s.
    assert gcb.analytic_flops(gcb.MINILM_SHAPE) == pytest.approx(1.397e9, rel=1e-3)
    assert 162_000 * gcb.analytic_flops(gcb.MINILM_SHAPE) / 789e12 == pytest.approx(0.29, abs=0.005)


@pytest.mark.gpu
def test_cudagraph_runner_on_cuda_matches_eager(tmp_path: Path) -> None:
    _, fn = _tiny("cuda")
    runner = gcb.StaticShapeRunner(fn, capture=True)
    with torch.inference_mode():
        for batch in (1, 8):
            x1, x2 = _ids(batch, 10 + batch, "cuda"), _ids(batch, 20 + batch, "cuda")
            runner(x1)
            out2 = runner(x2)  # replay on new data
            assert gcb.rel_error(out2, fn(x2)) <= gcb.TOLERANCE[torch.bfloat16]
            assert gcb.rel_error(out2, fn(x1)) > gcb.TOLERANCE[torch.bfloat16]
    assert runner.shapes == [(1, gcb.SEQ_LEN), (8, gcb.SEQ_LEN)]
    assert gcb.main(["--device", "cuda", "--tiny", "--batch-sizes", "1,8", *_FAST, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "guard_cuda_bench.json").read_text())["rows"]
    assert [(r["variant"], r["batch"], r["ok"]) for r in rows] == [
        ("eager-bf16", 1, True), ("cudagraph-bf16", 1, True), ("eager-bf16", 8, True), ("cudagraph-bf16", 8, True)]


def _session_wheels() -> list[str]:
    script = _ROOT / "benchmarks" / "gpu_session.sh"
    line = next(ln for ln in script.read_text().splitlines() if ln.startswith("GPU_WHEELS=("))
    out = subprocess.run(["bash", "-c", f'{line}\nprintf "%s\\n" "${{GPU_WHEELS[@]}}"'], capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def _make_gpu_wheels_download() -> list[str]:
    out = subprocess.run(["make", "-s", "-n", "-C", str(_ROOT), "gpu-wheels", "PY=python3"], capture_output=True,
                         text=True, check=True).stdout.replace("\\\n", " ")
    cmd = next(ln for ln in out.splitlines() if "pip download" in ln).split()
    assert {"--no-deps", "--only-binary=:all:", "--python-version", "3.12"} <= set(cmd)
    return [a for a in cmd[cmd.index("-d") + 2:]]  # the requirements follow "-d .whl"


def test_gpu_session_script_parses_and_installs_what_make_downloads() -> None:
    script = _ROOT / "benchmarks" / "gpu_session.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    wheels = _session_wheels()
    assert {"trl==1.16.0", "datasets==5.2.0"} <= set(wheels) and any(w.startswith("dill==") for w in wheels)
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    assert sorted(_make_gpu_wheels_download()) == sorted(wheels)
    assert '"${GPU_WHEELS[@]}"' in script.read_text()  # the install line uses the list, not a copy of it
