"""guard_bench.py runs end to end on a tiny artifact and writes its table (torch only: no export)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from pathlib import Path

import pytest
import torch

from models.artifact import ClassifierConfig
from models.classifier import GuardClassifier
from models.encoders import build_tiny_text_encoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# benchmarks/ is a folder of scripts, not a package: load the script as a module.
_SPEC = importlib.util.spec_from_file_location(
    "guard_bench", Path(__file__).resolve().parents[2] / "benchmarks" / "guard_bench.py")
guard_bench = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(guard_bench)


def test_bench_writes_json_and_csv_with_limit_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    enc = build_tiny_text_encoder(tmp_path / "enc")
    GuardClassifier(ClassifierConfig(encoder=str(enc))).eval().save(tmp_path / "art", {})
    out = tmp_path / "bench"
    argv = ["--artifact", str(tmp_path / "art"), "--backends", "torch,onnx,onnx-plain", "--modes", "text", "--batch-sizes", "1,4",
            "--threads", "1", "--reps", "3", "--items", "8", "--out", str(out)]
    assert guard_bench.main(argv) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["peak_gflops"] > 0 and doc["threads"] == 1 and "command" in doc
    rows = doc["rows"]
    assert [(r["backend"], r["batch"]) for r in rows] == [(b, n) for n in (1, 4) for b in ("torch", "onnx", "onnx-plain")]
    for r in rows:
        assert r["reps"] >= 3 and 0 < r["p50_ms"] <= r["p95_ms"]
        assert r["gflop_per_item"] > 0 and r["limit_items_per_s"] > 0
        assert r["pct_of_limit"] == pytest.approx(100 * r["items_per_s"] / r["limit_items_per_s"])
    with out.with_suffix(".csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 6


def test_matmul_peak_is_positive() -> None:
    assert guard_bench.matmul_peak(1, n=128, reps=2) > 1e6
