"""Small contracts of the alignment jobs: resume resolution, vision freezing, LoRA regex, CLI
nulls, guard-JSONL prompts for eval-harm and its table."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from training.align import dpo, eval_harm
from training.align.data.source import SpaVLDataArgs


def _args(value, out):
    return argparse.Namespace(resume_from_checkpoint=value, output_dir=str(out))


def test_resume_arg_resolves_last_checkpoint_or_fails_on_a_bad_path(tmp_path):
    assert dpo.resume_arg(_args(None, tmp_path)) is None
    assert dpo.resume_arg(_args("true", tmp_path / "missing")) is None  # nothing to resume yet
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    assert dpo.resume_arg(_args("true", tmp_path)).endswith("checkpoint-10")
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        dpo.resume_arg(_args(str(tmp_path / "nope"), tmp_path))


def test_freeze_vision_keeps_the_projector_trainable_and_refuses_text_models():
    from models.vlm import build_tiny_vlm

    model, _ = build_tiny_vlm("llava", 0)
    assert dpo.freeze_vision(model) > 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any("vision_tower" in n for n in trainable)
    assert any("multi_modal_projector" in n for n in trainable)
    with pytest.raises(ValueError, match="no vision_tower"):
        dpo.freeze_vision(torch.nn.Linear(2, 2))


def test_bad_lora_regex_fails_at_parse_time():
    import re

    with pytest.raises(re.error):
        dpo.DPOJobArgs(lora_target_regex="(")


def test_cli_null_clears_optional_data_fields():
    args = SpaVLDataArgs(eval_dataset_config="null", dataset_revision="None")
    assert args.eval_dataset_config is None and args.dataset_revision is None


def test_guard_jsonl_prompts_load_images_relative_to_the_root(tmp_path):
    from PIL import Image

    (tmp_path / "img").mkdir()
    Image.new("RGB", (12, 10), "red").save(tmp_path / "img" / "a.png")
    rows = [{"uid": "u1", "prompt": "what is this?", "images": ["img/a.png"], "orig_category": "weapons"},
            {"uid": "u2", "prompt": "text only", "images": []}]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ns = argparse.Namespace(guard_jsonl=str(tmp_path / "g.jsonl"), data_root=str(tmp_path), limit=None,
                            spa_vl_parquet=None, spa_vl_split=None)
    got = eval_harm.load_prompts(ns)
    assert [r["id"] for r in got] == ["u1", "u2"]
    assert got[0]["images"][0].size == (12, 10) and got[0]["category"] == "weapons"
    assert got[1]["images"] == [] and got[1]["category"] == "unknown"


def test_markdown_table_puts_models_side_by_side():
    results = {"base": {"unsafe_rate": 0.5, "per_category": {"a": 1.0, "b": 0.0}},
               "aligned": {"unsafe_rate": 0.25, "per_category": {"a": 0.5}}}
    table = eval_harm.markdown_table(results).splitlines()
    assert table[0] == "| | base | aligned |"
    assert table[2] == "| **unsafe rate (all)** | 0.500 | 0.250 |"
    assert table[3] == "| a | 1.000 | 0.500 |" and table[4] == "| b | 0.000 | nan |"


def test_bench_model_has_llava_15_7b_shapes_without_allocating():
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    from tests.scripts import load_benchmark

    bench_dpo = load_benchmark("bench_dpo")

    config, processor = bench_dpo.llava_7b_config_and_processor()
    with torch.device("meta"):  # shapes only, no 14 GB allocation
        model = LlavaForConditionalGeneration(config)
    assert sum(p.numel() for p in model.parameters()) == 7_063_427_072  # llava-hf/llava-1.5-7b-hf
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                           "text": "hi"}]}],
                                         add_generation_prompt=True)
    ids = processor(images=[Image.new("RGB", (500, 300))], text=[text], return_tensors="pt")["input_ids"][0]
    assert int((ids == config.image_token_index).sum()) == 576


def test_smoke_replaces_a_previous_run_but_not_other_folders(tmp_path):
    from training.smoke import _clear_previous_run

    run = tmp_path / "smoke"
    (run / "dpo").mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    _clear_previous_run(run)
    assert list(run.iterdir()) == []
    (run / "my_notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a smoke run"):
        _clear_previous_run(run)
    assert (run / "my_notes.txt").exists()
