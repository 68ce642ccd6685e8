"""LoRA fine-tune on a tiny random encoder: warm start from a train-guard artifact, loss falls, the
adapters move, the artifact (heads + adapters) loads through the torch backend, both arms measured."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from training.guard import distill, finetune, heads

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"
BAD = ["bomb", "poison", "steal", "kill", "weapon", "hack"]
GOOD = ["bread", "garden", "poem", "math", "travel", "music"]


def _rows(n: int) -> list[dict]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        unsafe, word = i % 2, rng.choice(BAD if i % 2 else GOOD)
        row = {"uid": f"r{i}", "dataset": f"set{i % 3}", "prompt": f"tell me about {word} now",
               "images": [], "label_prompt_unsafe": unsafe}
        if i % 4 < 2:  # half the rows also carry a reply labelled by its content
            reply = rng.choice(BAD if (i // 4) % 2 else GOOD)
            row |= {"response": f"sure, here is all about {reply}", "label_response_unsafe": int(reply in BAD)}
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from models.encoders import build_tiny_text_encoder

    root = tmp_path_factory.mktemp("ft")
    enc = build_tiny_text_encoder(root / "enc", seed=0)
    (root / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(160)) + "\n")
    common = ["--encoder", str(enc), "--data_root", str(root), "--cache_dir", str(root / "cache")]
    (base_cfg,) = distill.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "guard_tiny.yaml"), "--output_dir", str(root / "base"), *common])
    distill.run(base_cfg, [])
    return root, common


def _ft_cfg(root: Path, common: list[str], **over) -> finetune.FinetuneConfig:
    args = ["--config", str(CONFIGS / "guard_tiny.yaml"), *common, "--init_from", str(root / "base"),
            "--output_dir", str(root / "lora"), "--epochs", "4", "--batch_size", "16", "--learning_rate", "0.003",
            "--encoder_learning_rate", "0.01", "--max_train_items", "64", "--lora_target_modules", "query", "value"]
    for k, v in over.items():
        args += [f"--{k}", str(v)]
    (cfg,) = finetune.make_parser().parse_args_and_config(args)
    return cfg


def test_finetune_lowers_loss_moves_adapters_and_loads(setup, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, common = setup
    cfg = _ft_cfg(root, common)
    from models.classifier import GuardClassifier

    base = GuardClassifier.load(root / "base")
    model = finetune.build_lora_model(cfg, base)
    # warm start: the heads are the baseline's trained heads
    assert torch.equal(model.out.weight, base.out.weight)
    lora0 = {k: v.clone() for k, v in model.state_dict().items() if "lora_B" in k}
    assert lora0 and all(float(v.abs().sum()) == 0.0 for v in lora0.values())  # peft starts B at 0
    examples, pairs, _ = distill.load_examples(cfg)
    data = heads.build_head_data(base, examples, pairs, cfg)
    items, pair_items = finetune.labelled_items(examples, pairs)
    assert len(items) == data.n
    train_idx = np.arange(data.n)
    losses = finetune.finetune(model, items, pair_items, data, train_idx, cfg)
    assert len(losses) == 4 * 4  # 4 epochs × 64 items / 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    moved = [k for k, v in model.state_dict().items() if k in lora0 and not torch.equal(v, lora0[k])]
    assert set(moved) == set(lora0)  # every adapter learned something


def test_run_writes_artifact_with_both_arms(setup, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, common = setup
    report = finetune.run(_ft_cfg(root, common), [])
    arms = report["arms"]
    assert set(arms) == {"frozen_baseline", "lora"}
    n = report["split"]["measured"]
    for arm in arms.values():  # both arms measured on the same items
        assert arm["prompt"]["n"] + arm["response"]["n"] == n
        assert set(arm["probes"]) == set(finetune.PROBES)
        assert 0.0 <= arm["benign_response_fpr"] <= 1.0
    assert report["split"]["train"] + report["split"]["calibration"] + n == 160 + 80
    from models.backends import GuardInput, load_backend

    art = root / "lora"
    assert json.loads((art / "config.json").read_text())["encoder_trainable"] == "lora"
    from safetensors.torch import load_file

    keys = load_file(str(art / "head.safetensors"))
    assert any("lora_A" in k for k in keys) and not any("attention.self.query.base_layer" in k for k in keys)
    backend = load_backend("torch", art, device="cpu")
    v_bad, v_good = backend.score([GuardInput("tell me about bomb now"), GuardInput("tell me about bread now")])
    assert v_bad.unsafe_prob > v_good.unsafe_prob


def test_encoder_mismatch_and_bad_knobs_fail(setup):
    root, common = setup
    with pytest.raises(ValueError, match="eval_fraction"):
        _ft_cfg(root, common, eval_fraction=1.5)
    cfg = _ft_cfg(root, common)
    from models.classifier import GuardClassifier

    base = GuardClassifier.load(root / "base")
    with pytest.raises(ValueError, match="encoder"):
        finetune.build_lora_model(finetune.FinetuneConfig(**{**cfg.__dict__, "encoder": "other-encoder"}), base)


def test_lora_recipe_parses_with_finetune_defaults():
    (cfg,) = finetune.make_parser().parse_args_and_config(["--config", str(CONFIGS / "guard_lora.yaml")])
    assert cfg.lora_r == 16 and cfg.lora_target_modules == ["query", "key", "value", "dense"]
    assert cfg.max_length <= 128 and cfg.epochs <= 2 and cfg.init_from == "models/default"
