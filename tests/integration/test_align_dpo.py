"""Tiny-VLM DPO on the synthetic SPA-VL fixture through ``spaguard train-dpo``'s own code path:
the loss falls, every trainable parameter changes, reward accuracy > 0.5, LoRA merges back into
the base class, a resumed run gives the same next-step loss, and every recipe parses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from training.align import dpo
from training.align.data import fixtures


CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from models.vlm import save_tiny_vlm

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("align_dpo")
    fixtures.write_parquet(root / "train.parquet", n=32, seed=0)
    fixtures.write_parquet(root / "val.parquet", n=8, seed=5)
    for arch in ("llava", "qwen2_vl"):
        save_tiny_vlm(root / arch, arch, 0)
    return root


def _run(assets: Path, recipe: str, arch: str, out: Path, *extra: str) -> list[dict]:
    argv = ["--config", str(CONFIGS / recipe), "--data_files", str(assets / "train.parquet"),
            "--model_name_or_path", str(assets / arch), "--output_dir", str(out), *extra]
    assert dpo.main(argv) == 0
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _params(path: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(path)
    frozen = dpo.freeze_vision(model)  # what freeze_vision_tower: true does in the recipe
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad} | {"_frozen": frozen}


@pytest.mark.parametrize(("arch", "recipe"), [("llava", "tiny_llava_dpo_cpu.yaml"),
                                              ("qwen2_vl", "tiny_qwen2vl_dpo_cpu.yaml")])
def test_tiny_dpo_learns_and_moves_every_trainable_parameter(assets, tmp_path, arch, recipe):
    records = _run(assets, recipe, arch, tmp_path / "out", "--eval_data_files", str(assets / "val.parquet"),
                   "--eval_strategy", "steps", "--eval_steps", "4")
    logs = [r for r in records if "loss" in r]
    assert len(logs) == 8
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    assert len(evals) == 2 and evals[-1] < 0.6931  # held-out pairs: below the untrained log(2)
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.1
    assert logs[-1]["rewards/accuracies"] > 0.5 and logs[-1]["rewards/margins"] > 0
    before, after = _params(assets / arch), _params(tmp_path / "out" / "final")
    assert before.pop("_frozen") > 0 and after.pop("_frozen") > 0 and before.keys() == after.keys()
    unchanged = [k for k, v in before.items() if torch.equal(v, after[k])]
    assert not unchanged, f"parameters that did not train: {unchanged}"
    card = json.loads((tmp_path / "out" / "final" / "card.json").read_text())
    assert card["base_model"] == str(assets / arch) and card["last_train_log"]["loss"] == logs[-1]["loss"]
    assert card["data"]["conversion"]["train"]["kept"] == 32 and card["versions"]["trl"] == "1.16.0"
    report = json.loads((tmp_path / "out" / "data_report.json").read_text())
    assert report["conversion"]["train"]["kept"] == 32 and report["conversion"]["eval"]["kept"] == 8


def test_lora_dpo_merges_back_into_the_base_class(assets, tmp_path):
    from transformers import AutoModelForImageTextToText, LlavaForConditionalGeneration

    _run(assets, "tiny_llava_dpo_lora_cpu.yaml", "llava", tmp_path / "lora")
    merged = AutoModelForImageTextToText.from_pretrained(tmp_path / "lora" / "final")
    assert type(merged) is LlavaForConditionalGeneration
    assert not any("lora" in name for name, _ in merged.named_parameters())
    base = AutoModelForImageTextToText.from_pretrained(assets / "llava").state_dict()
    assert base.keys() == merged.state_dict().keys()
    moved = [k for k, v in merged.state_dict().items() if "q_proj" in k and "language_model" in k
             and not torch.equal(v, base[k])]
    assert moved, "merged LoRA left the attention weights unchanged"
    vision_moved = [k for k, v in merged.state_dict().items() if "vision_tower" in k and not torch.equal(v, base[k])]
    assert not vision_moved, "lora_target_regex must keep the adapters on the language model"


def test_resume_from_checkpoint_gives_the_same_next_step_loss(assets, tmp_path):
    full = _run(assets, "tiny_llava_dpo_cpu.yaml", "llava", tmp_path / "a", "--max_steps", "4",
                "--save_steps", "2")
    resumed_dir = tmp_path / "b"
    shutil.copytree(tmp_path / "a" / "checkpoint-2", resumed_dir / "checkpoint-2")
    resumed = _run(assets, "tiny_llava_dpo_cpu.yaml", "llava", resumed_dir, "--max_steps", "4",
                   "--save_steps", "2", "--resume_from_checkpoint", "true")
    loss_a = {r["step"]: r["loss"] for r in full if "loss" in r}
    loss_b = {r["step"]: r["loss"] for r in resumed if "loss" in r}
    assert min(loss_b) == 3
    assert loss_b[3] == pytest.approx(loss_a[3], rel=1e-4)


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*dpo*.yaml")))
def test_every_dpo_recipe_parses_against_the_pinned_trl(recipe):
    # NOTE: use_cpu only so GPU recipes (bf16: true) pass TrainingArguments' device check here.
    data, job, args, model = dpo.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / recipe), "--use_cpu", "true"])
    assert model.model_name_or_path and args.beta > 0
    if "7b" in recipe:
        assert args.bf16 and args.max_length is None and data.dataset_source == "hub"


def test_paper_recipe_matches_the_spa_vl_setup():
    data, job, args, model = dpo.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "llava15_7b_dpo_full.yaml"), "--use_cpu", "true"])
    assert model.model_name_or_path == "llava-hf/llava-1.5-7b-hf" and not model.use_peft
    assert (args.beta, args.learning_rate, args.lr_scheduler_type.value, args.num_train_epochs) == (
        0.1, 1e-6, "cosine", 1)
    assert args.per_device_train_batch_size == 1 and args.bf16


def test_unknown_recipe_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "tiny_llava_dpo_cpu.yaml").read_text() + "\nbetta: 0.2\n")
    with pytest.raises(ValueError, match="betta"):
        dpo.make_parser().parse_args_and_config(["--config", str(bad)])


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*reward*.yaml")))
def test_every_reward_recipe_parses(recipe):
    from training.align import reward

    data, cfg = reward.make_parser().parse_args_and_config(["--config", str(CONFIGS / recipe)])
    assert cfg.model_name_or_path and data.dataset_source in ("hub", "parquet")


@pytest.mark.parametrize("recipe", sorted(p.name for p in CONFIGS.glob("*grpo*.yaml")))
def test_every_grpo_recipe_parses_against_the_pinned_trl(recipe):
    from training.align import rl

    data, job, args, model = rl.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / recipe), "--use_cpu", "true"])
    assert job.reward_model_path and args.num_generations >= 2 and model.model_name_or_path


def test_streaming_hub_path_trains_with_lazy_counts(assets, tmp_path, monkeypatch):
    """The streaming branch (hub train split) with the hub replaced by the local fixture."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    from training.align.data import source

    def fake_hub(args, config, split, streaming):
        assert (config, split, streaming) == ("default", "train", True)
        ds = load_dataset("parquet", data_files=str(assets / "train.parquet"), split="train", streaming=True)
        return ds.cast_column("image", ImageFeature(decode=False))

    monkeypatch.setattr(source, "_hub", fake_hub)
    out = tmp_path / "stream"
    argv = ["--config", str(CONFIGS / "tiny_llava_dpo_cpu.yaml"), "--dataset_source", "hub", "--streaming", "true",
            "--eval_dataset_config", "null", "--data_files", "null", "--model_name_or_path", str(assets / "llava"),
            "--output_dir", str(out), "--max_steps", "3", "--save_strategy", "no"]
    assert dpo.main(argv) == 0
    report = json.loads((out / "data_report.json").read_text())
    assert report["conversion"]["train"]["kept"] >= 12  # 3 steps x 4 pairs were read from the stream
    assert report["length"]["train"]["length_ok"] >= 12


@pytest.mark.gpu
def test_tiny_dpo_on_cuda_bf16(assets, tmp_path):
    logs = [r for r in _run(assets, "tiny_llava_dpo_cpu.yaml", "llava", tmp_path / "gpu", "--use_cpu", "false",
                            "--bf16", "true", "--save_strategy", "no") if "loss" in r]
    assert logs[-1]["loss"] < logs[0]["loss"] and logs[-1]["rewards/accuracies"] > 0.5
