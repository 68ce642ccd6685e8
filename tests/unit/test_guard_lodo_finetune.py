"""``spaguard crossval-finetune`` on a tiny random encoder: every source held out once, nothing of a held-out
source trains or calibrates either arm, both arms reported per source with macro rows, bad knobs exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from training.guard import lodo_finetune
from training.guard.lodo_finetune import arm_report, deal_sources

from .test_guard_finetune import CONFIGS, _rows


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from models.encoders import build_tiny_text_encoder

    root = tmp_path_factory.mktemp("lodo_ft")
    enc = build_tiny_text_encoder(root / "enc", seed=0)
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(120)) + "\n")
    args = ["--config", str(CONFIGS / "guard_tiny.yaml"), "--encoder", str(enc), "--data_root", str(root),
            "--cache_dir", str(root / "cache"), "--output_dir", str(root / "out"), "--source_folds", "3",
            "--warm_epochs", "3", "--epochs", "1", "--batch_size", "16", "--max_train_items", "32",
            "--lora_target_modules", "query", "value"]
    return root, args


def test_deal_sources_puts_each_source_in_one_fold_seeded():
    sources = [f"s{i}" for i in range(7)]
    folds = deal_sources(sources, 3, seed=0)
    assert len(folds) == 3 and sorted(s for f in folds for s in f) == sources
    assert folds == deal_sources(sources, 3, seed=0) and all(f == sorted(f) for f in folds)
    assert deal_sources(["a", "b"], 5, seed=1) in ([["a"], ["b"]], [["b"], ["a"]])  # never an empty fold


def test_arm_report_is_per_source_and_task_with_a_macro_row():
    data = SimpleNamespace(groups=["a", "a", "a", "b", "b", "b"], task=np.array([0, 0, 0, 0, 0, 1]),
                           label_key=lambda i: [1, 0, 1, 1, 0, 0][i])
    preds = {0: (0.9, True), 1: (0.2, False), 2: (0.3, False), 3: (0.8, True), 4: (0.7, True), 5: (0.1, False)}
    rep = arm_report(data, preds)
    a, b = rep["prompt_by_dataset"]["a"], rep["prompt_by_dataset"]["b"]
    assert (a["recall"], a["fpr"]) == (0.5, 0.0) and (b["recall"], b["fpr"]) == (1.0, 1.0)
    assert rep["prompt_macro"]["recall"] == pytest.approx(0.75) and rep["prompt_macro"]["fpr"] == pytest.approx(0.5)
    assert list(rep["response_by_dataset"]) == ["b"] and rep["response_by_dataset"]["b"]["fpr"] == 0.0


def test_every_source_is_held_out_once_and_never_trains(recipe, monkeypatch):
    root, args = recipe
    seen: list[dict] = []
    real_finetune, real_calibrate = lodo_finetune.finetune, lodo_finetune.train_and_calibrate

    def spy_calibrate(model, data, fit_idx, cal_idx, cfg):
        seen.append({"groups": data.groups, "fit": set(fit_idx.tolist()), "cal": set(cal_idx.tolist())})
        assert cfg.epochs == 3  # the frozen arm trains warm_epochs, not the fine-tune's epochs
        return real_calibrate(model, data, fit_idx, cal_idx, cfg)

    def spy_finetune(model, items, pair_items, data, fit_idx, cfg):
        assert set(fit_idx.tolist()) == seen[-1]["fit"]  # the LoRA arm trains on the frozen arm's split
        return real_finetune(model, items, pair_items, data, fit_idx, cfg)

    monkeypatch.setattr(lodo_finetune, "train_and_calibrate", spy_calibrate)
    monkeypatch.setattr(lodo_finetune, "finetune", spy_finetune)
    assert lodo_finetune.main(args) == 0
    report = json.loads((root / "out" / "lodo_finetune.json").read_text())
    held = [set(f["sources"]) for f in report["folds"]]
    assert sorted(s for f in held for s in f) == ["set0", "set1", "set2"] and len(seen) == 3
    for fold, call in zip(held, seen):
        used = {call["groups"][i] for i in call["fit"] | call["cal"]}
        assert not used & fold  # nothing of a held-out source trains or calibrates
    for arm in ("frozen", "lora"):
        assert set(report[arm]["prompt_by_dataset"]) == {"set0", "set1", "set2"}
        assert set(report[arm]["response_by_dataset"]) == {"set0", "set1", "set2"}
        assert report[arm]["prompt_macro"]["sources"]["recall"] == 3
    md = (root / "out" / "lodo_finetune.md").read_text()
    assert "| frozen | prompt | 3 |" in md and "| lora | response | 3 |" in md and "### lora" in md
    n = sum(f["held_out"] for f in report["folds"])
    assert n == sum(m["n"] for arm in ("prompt", "response") for m in report["lora"][f"{arm}_by_dataset"].values())


def test_ablated_arms_train_without_the_named_sources_on_the_same_split(recipe, monkeypatch):
    root, args = recipe
    calls: list[tuple[set, set]] = []
    tuned: list[set] = []
    real_finetune, real_calibrate = lodo_finetune.finetune, lodo_finetune.train_and_calibrate
    groups: list[str] = []

    def spy_calibrate(model, data, fit_idx, cal_idx, cfg):
        groups[:] = data.groups
        calls.append((set(fit_idx.tolist()), set(cal_idx.tolist())))
        return real_calibrate(model, data, fit_idx, cal_idx, cfg)

    def spy_finetune(model, items, pair_items, data, fit_idx, cfg):
        tuned.append(set(fit_idx.tolist()))
        return real_finetune(model, items, pair_items, data, fit_idx, cfg)

    monkeypatch.setattr(lodo_finetune, "train_and_calibrate", spy_calibrate)
    monkeypatch.setattr(lodo_finetune, "finetune", spy_finetune)
    out = root / "out_ablate"
    assert lodo_finetune.main([*args, "--output_dir", str(out), "--ablate_sources", "set1"]) == 0
    report = json.loads((out / "lodo_finetune.json").read_text())
    assert len(calls) == 6 and len(tuned) == 6  # per fold: the full pair of arms, then the ablated pair
    for k, fold in enumerate(report["folds"]):
        (fit, cal), (fit_without, cal_without) = calls[2 * k], calls[2 * k + 1]
        assert cal_without == cal  # same calibration items: the pairs differ only in what trained
        assert fit_without == {i for i in fit if groups[i] != "set1"}
        assert (fit_without < fit) == ("set1" not in fold["sources"])  # a held-out set1 has nothing to remove
        assert tuned[2 * k] == fit and tuned[2 * k + 1] == fit_without
        assert fold["trained_without"] == len(fit_without)
    for arm in ("frozen", "lora", "frozen_without", "lora_without"):
        assert set(report[arm]["prompt_by_dataset"]) == {"set0", "set1", "set2"}  # all score the same items
        assert [m["n"] for m in report[arm]["prompt_by_dataset"].values()] == \
            [m["n"] for m in report["lora"]["prompt_by_dataset"].values()]
    assert report["ablated_sources"] == ["set1"]
    md = (out / "lodo_finetune.md").read_text()
    assert "| lora_without | prompt | 3 |" in md and "trained without set1" in md
    # macro rows also over the held-out sources outside the ablation (set0, set2) and over the ablated one
    assert "| held-out sources outside the ablation | task |" in md and "| lora_without | prompt | 2 |" in md
    assert "| held-out ablated sources | task |" in md and "| lora_without | prompt | 1 |" in md
    outside = lodo_finetune.subset(report["lora"], lambda g: g != "set1")
    per = report["lora"]["prompt_by_dataset"]
    assert outside["prompt_macro"]["recall"] == pytest.approx((per["set0"]["recall"] + per["set2"]["recall"]) / 2)


def test_an_unknown_ablated_source_exits_2_before_encoding(recipe, monkeypatch, capsys):
    _, args = recipe

    def no_encoding(*a, **k):
        raise AssertionError("encoded before checking ablate_sources")

    monkeypatch.setattr(lodo_finetune, "build_head_data", no_encoding)
    assert lodo_finetune.main([*args, "--ablate_sources", "set1", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ablate_sources" in err[0] and "nope" in err[0] and "set1" not in err[0]


@pytest.mark.parametrize("flag, value", [("--source_folds", "1"), ("--warm_epochs", "0")])
def test_bad_knobs_exit_2_with_one_line(recipe, flag, value, capsys):
    _, args = recipe
    assert lodo_finetune.main([*args, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "source_folds" in err[0]


def test_a_missing_recipe_exits_2(tmp_path: Path, capsys):
    assert lodo_finetune.main(["--config", str(tmp_path / "nope.yaml")]) == 2
