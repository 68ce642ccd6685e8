"""guard_bench's "limit" is a ceiling: FLOPs counted as a hand count says, per backend, at measured GEMM peaks.

A tiny BERT (hidden 32, 2 layers, FFN 64, 2 heads) has a FLOP count small enough to write out by hand;
the counter must match it exactly, attention included (FlopCounterMode misses CPU SDPA, so the counter
switches to eager attention), and the LoRA adapters must count for torch but not for the merged graph ORT runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from models.artifact import ClassifierConfig
from models.backends import GuardInput
from models.classifier import GuardClassifier
from models.encoders import build_tiny_text_encoder
from tests.scripts import load_benchmark

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ceiling = load_benchmark("gemm_ceiling")
guard_bench = load_benchmark("guard_bench")

H, LAYERS, FFN, HEAD_HIDDEN = 32, 2, 64, 16  # build_tiny_text_encoder: intermediate = 2 * hidden
ITEMS = [GuardInput("how do i bake banana bread"), GuardInput("what is the capital of france today", response="Paris.")]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_text_encoder(tmp_path_factory.mktemp("enc"), hidden=H, layers=LAYERS)


def _hand_count(batch: int, tokens: int, nodes: int) -> tuple[int, int]:
    """(weight-matmul FLOPs, attention FLOPs) of one forward, 2 FLOPs per multiply-add."""
    per_token_layer = 2 * 4 * H * H + 2 * 2 * H * FFN  # Q, K, V, output projections + FFN up and down
    encoder = batch * LAYERS * tokens * per_token_layer
    pooler = batch * 2 * H * H  # BertModel's pooler runs even though the classifier pools itself
    heads = batch * (2 * (2 * H + 1) * HEAD_HIDDEN + 2 * HEAD_HIDDEN * (2 + nodes))  # trunk + output layer
    attention = batch * LAYERS * 2 * (2 * tokens * tokens * H)  # QK^T and AV over all heads
    return encoder + pooler + heads, attention


def test_flop_count_matches_hand_count_attention_included(encoder: Path) -> None:
    torch.manual_seed(0)
    model = GuardClassifier(ClassifierConfig(encoder=str(encoder), head_hidden=HEAD_HIDDEN)).eval()
    feats = model.featurize(ITEMS)
    batch, tokens = feats["input_ids"].shape
    assert tokens % 8 == 0  # the padded length every backend feeds, not the longest item's
    got = ceiling.count_flops(model, feats)
    gemm, attention = _hand_count(batch, tokens, len(model.config.node_keys))
    assert (got.gemm, got.attention, got.tokens) == (gemm, attention, tokens)
    assert got.total == gemm + attention
    # counting left the model's own attention implementation in place
    assert model.encoder.config._attn_implementation != "eager"


def test_lora_adapters_count_for_torch_not_for_the_merged_onnx_model(encoder: Path) -> None:
    torch.manual_seed(0)
    r = 4
    model = GuardClassifier(ClassifierConfig(encoder=str(encoder), head_hidden=HEAD_HIDDEN, encoder_trainable="lora",
                                             lora_r=r, lora_target_modules=["query", "value"])).eval()
    feats = model.featurize(ITEMS)
    batch, tokens = feats["input_ids"].shape
    unmerged, merged = ceiling.count_flops(model, feats), ceiling.count_flops(ceiling.merged_for_onnx(model), feats)
    adapters = batch * LAYERS * 2 * tokens * 2 * (H * r + r * H)  # query and value: (H -> r -> H) each
    assert unmerged.gemm - merged.gemm == adapters
    assert merged.attention == unmerged.attention
    assert merged.gemm == _hand_count(batch, tokens, len(model.config.node_keys))[0]
    assert model.encoder is not ceiling.merged_for_onnx(model).encoder  # the torch backend's model is left unmerged


def test_min_seconds_bounds_int8_by_its_own_peak() -> None:
    flops = ceiling.FlopCount(gemm=8e9, attention=1e9, tokens=24)
    peak = ceiling.GemmPeak(fp32=100e9, int8=400e9, fp32_source="a", int8_source="b")
    assert ceiling.min_seconds(flops, peak, int8=False) == pytest.approx(0.09)
    assert ceiling.min_seconds(flops, peak, int8=True) == pytest.approx(8e9 / 400e9 + 1e9 / 100e9)


def test_gemm_probe_keeps_the_best_of_every_round() -> None:
    probe = ceiling.GemmProbe(threads=1, hidden=32, intermediate=64, rows=64)
    first = probe.measure(budget_s=0.0)
    assert first.fp32 > 1e6 and first.int8 >= first.fp32
    assert "MatMulInteger" in first.int8_source or first.int8 == first.fp32
    second = probe.measure(budget_s=0.0)
    assert probe.best.fp32 == max(first.fp32, second.fp32) and probe.best.int8 == max(first.int8, second.int8)


def test_bench_rows_carry_their_bound_and_stay_under_it(encoder: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAGUARD_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    GuardClassifier(ClassifierConfig(encoder=str(encoder))).eval().save(tmp_path / "art", {})
    out = tmp_path / "bench"
    argv = ["--artifact", str(tmp_path / "art"), "--backends", "torch,onnx,onnx-int8", "--modes", "text",
            "--batch-sizes", "1,4", "--threads", "1", "--reps", "3", "--items", "8", "--peak-budget-s", "0.01",
            "--out", str(out)]
    assert guard_bench.main(argv) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["peak_int8_gops"] >= doc["peak_gflops"] > 0 and doc["torch_mm_peak_gflops"] > 0
    bounds = {r["backend"]: r["bound"] for r in doc["rows"]}
    assert bounds == {"torch": "fp32", "onnx": "fp32", "onnx-int8": "int8"}
    for r in doc["rows"]:
        assert r["tokens"] % 8 == 0 and r["limit_items_per_s"] > 0
        assert r["pct_of_limit"] == pytest.approx(100 * r["items_per_s"] / r["limit_items_per_s"])
    assert doc["rows_over_limit"] == sum(r["pct_of_limit"] > 100 for r in doc["rows"]) == 0
