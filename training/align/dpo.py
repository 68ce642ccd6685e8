"""``spaguard train-dpo``: align a VLM on SPA-VL with TRL's ``DPOTrainer``, used as it is.

Contract
--------
``main(argv)`` parses ``--config recipe.yaml`` plus CLI overrides with ``TrlParser`` into
``(SpaVLDataArgs, DPOJobArgs, DPOConfig, ModelConfig)``; an unknown key fails. It loads the model
and processor with the Auto classes (hub id or local path), converts the data
(``training.align.data``), drops pairs whose prompt would be cut by ``max_length`` (counted), trains,
and writes to ``output_dir``: checkpoints (``checkpoint-N``; ``resume_from_checkpoint: true``
resumes from the last one), the final model (LoRA adapters merged when ``merge_lora``),
``metrics.jsonl`` (every log: loss, rewards/chosen|rejected|margins|accuracies, ...) and
``data_report.json`` (kept / skipped counts). Returns 0 on success.

    spaguard train-dpo --config training/configs/llava15_7b_dpo_lora.yaml
    accelerate launch --config_file training/accelerate/zero2.yaml -m training.align.dpo \
        --config training/configs/llava15_7b_dpo_full.yaml

Local logic lives in data conversion, config and callbacks, never in a ``DPOTrainer`` subclass.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from training.align.data.source import SpaVLDataArgs, load_preference_splits


@dataclass
class DPOJobArgs:
    """Job-level knobs that are neither data nor TRL's ``DPOConfig``/``ModelConfig``."""

    length_filter: bool = field(
        default=True, metadata={"help": "Drop (and count) pairs whose prompt would be cut by max_length."}
    )
    freeze_vision_tower: bool = field(
        default=True, metadata={"help": "Keep the vision encoder frozen (LLaVA-1.5 / SPA-VL practice)."}
    )
    lora_target_regex: str | None = field(
        default=None,
        metadata={"help": "PEFT target_modules as a regex (full match), e.g. to put LoRA on the language "
                  "model only; overrides lora_target_modules."},
    )
    merge_lora: bool = field(default=True, metadata={"help": "Merge LoRA adapters into the saved final model."})

    def __post_init__(self) -> None:
        if self.lora_target_regex is not None:
            import re

            re.compile(self.lora_target_regex)  # fail at parse time, not after the model loaded


class JsonlLogCallback(TrainerCallback):
    """Append every ``Trainer`` log dict (with its step) to ``<output_dir>/metrics.jsonl``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001 - Trainer signature
        if logs and state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class ReloadCheckpointWeightsCallback(TrainerCallback):
    """Reload a full-model checkpoint's weights with ``from_pretrained``'s key conversion.

    NOTE: workaround for transformers#43701 (open in 5.17): VLM checkpoints are saved in
    the original key layout (``language_model.model.*``) but ``Trainer`` resumes with a plain
    ``load_state_dict``, so every key misses and training silently restarts from the base weights
    (a resumed DPO run logs loss log(2) again). DeepSpeed/FSDP resume through their own formats and
    adapter-only (LoRA) checkpoints load fine, so only full ``model*.safetensors`` checkpoints are
    reloaded, at ``on_train_begin`` (after ``Trainer`` restored optimizer, scheduler and RNG)."""

    def __init__(self, checkpoint: str | None) -> None:
        self.checkpoint = checkpoint

    def on_train_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001 - Trainer signature
        ckpt = Path(self.checkpoint) if self.checkpoint else None
        distributed_format = (args.deepspeed or getattr(args, "deepspeed_plugin", None) is not None or args.fsdp
                              or os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true")
        if ckpt is None or model is None or distributed_format:
            return
        if not any(ckpt.glob("model*.safetensors")):  # adapter-only checkpoint
            return
        from transformers import AutoModelForImageTextToText

        dtype = next(model.parameters()).dtype
        loaded = AutoModelForImageTextToText.from_pretrained(ckpt, dtype=dtype)
        model.load_state_dict(loaded.state_dict(), strict=True)  # strict: a mismatch must fail loudly


def make_parser():
    """The ``TrlParser`` of this job (also used by the recipe-parsing test)."""
    from trl import DPOConfig, ModelConfig, TrlParser

    return TrlParser((SpaVLDataArgs, DPOJobArgs, DPOConfig, ModelConfig))


def load_model_and_processor(model_args: Any, freeze_vision_tower: bool):
    """Auto-class load of ``ModelConfig.model_name_or_path`` (hub id or directory) and its processor."""
    return load_vlm_for_training(model_args.model_name_or_path, freeze_vision_tower, dtype=model_args.dtype,
                                 revision=model_args.model_revision,
                                 attn_implementation=model_args.attn_implementation)


def load_vlm_for_training(name_or_path: str | None, freeze_vision_tower: bool, *, dtype: str | None = None,
                          revision: str | None = None, attn_implementation: str | None = None):
    """``(model, processor)`` through the Auto classes, vision tower frozen on request."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not name_or_path:
        raise ValueError("model_name_or_path is required (hub id or local checkpoint directory)")
    torch_dtype = dtype if dtype in (None, "auto") else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(
        name_or_path, revision=revision, dtype=torch_dtype, attn_implementation=attn_implementation)
    processor = AutoProcessor.from_pretrained(name_or_path, revision=revision)
    if not hasattr(processor, "image_processor"):
        # NOTE: without torchvision, AutoProcessor falls back to the bare tokenizer for
        # Qwen2-VL; models.vlm knows how to rebuild the image-only processor (ask: make it public).
        from models.vlm import _load_processor

        processor = _load_processor(name_or_path, model.config.model_type)
    if freeze_vision_tower:
        freeze_vision(model)
    return model, processor


def freeze_vision(model: Any) -> int:
    """Set ``requires_grad=False`` on the vision encoder; returns how many tensors were frozen.

    NOTE: transformers 5 names it ``model.vision_tower`` (LLaVA) or ``model.visual``
    (Qwen2-VL); a model with neither raises so a silent full fine-tune cannot happen. The
    projector stays trainable."""
    inner = getattr(model, "model", model)
    tower = getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)
    if tower is None:
        raise ValueError(
            f"{type(model).__name__}: no vision_tower/visual module to freeze; set freeze_vision_tower: false"
        )
    n = 0
    for name, p in tower.named_parameters():
        # Qwen2-VL's patch merger is its vision→text projector (LLaVA's multi_modal_projector): trains.
        if not name.startswith("merger."):
            p.requires_grad_(False)
            n += 1
    return n


def peft_config_for(model_args: Any, job: DPOJobArgs):
    """TRL's LoRA config from ``ModelConfig``, with the regex target when given (None without PEFT)."""
    from trl import get_peft_config

    config = get_peft_config(model_args)
    if config is not None and job.lora_target_regex:
        config.target_modules = job.lora_target_regex
    return config


def prepare_data(data_args: SpaVLDataArgs, job: DPOJobArgs, max_length: int | None, processor: Any,
                 num_proc: int | None = None):
    """Train/eval datasets after conversion and the length filter, plus the data report."""
    from training.align.data.length import check_max_length, filter_by_length

    train, eval_ds, report = load_preference_splits(data_args)
    first = next(iter(train))
    check_max_length(max_length, first, processor)  # fail before the model trains, with the fix
    length_counts: dict[str, Counter] = {"train": Counter(), "eval": Counter()}
    if job.length_filter:
        from accelerate import PartialState

        with PartialState().main_process_first():  # rank 0 measures; the others hit its cache
            train = filter_by_length(train, processor, max_length, length_counts["train"], num_proc)
            if eval_ds is not None:
                eval_ds = filter_by_length(eval_ds, processor, max_length, length_counts["eval"], num_proc)
    return train, eval_ds, {"conversion": report, "length": length_counts}


def write_report(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """Write the kept/skipped counts (conversion + length) as JSON; returns the plain dict."""
    plain = {
        "conversion": {k: v.as_dict() for k, v in report["conversion"].items()},
        "length": {k: dict(v) for k, v in report["length"].items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plain, indent=2), encoding="utf-8")
    return plain


def resume_arg(training_args: Any) -> str | bool | None:
    """``resume_from_checkpoint``: a path, or true/"last" = the newest ``checkpoint-N`` (None if none)."""
    from transformers.trainer_utils import get_last_checkpoint

    value = training_args.resume_from_checkpoint
    if value in (None, False, "false", "False", ""):
        return None
    if value in (True, "true", "True", "last"):
        out = Path(training_args.output_dir)
        return get_last_checkpoint(str(out)) if out.is_dir() else None
    if not Path(value).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: {value} is not a checkpoint directory")
    return value


def save_final(trainer: Any, processor: Any, out: Path, merge_lora: bool) -> None:
    """Save the final model and processor to ``out/final``.

    LoRA with ``merge_lora`` on one device, DDP or ZeRO-1/2: the merged full model (loads with
    ``from_pretrained``). Everything else goes through ``trainer.save_model``, which gathers
    ZeRO-3 / FSDP shards; under those a LoRA run keeps its adapters unmerged (merging needs the
    gathered base weights: load base + adapter later and call ``merge_and_unload``)."""
    final = out / "final"
    model = trainer.accelerator.unwrap_model(trainer.model)
    sharded = trainer.is_fsdp_enabled or (
        trainer.is_deepspeed_enabled and trainer.accelerator.state.deepspeed_plugin.zero_stage == 3)
    if merge_lora and hasattr(model, "merge_and_unload") and not sharded:
        merged = model.merge_and_unload()
        if trainer.accelerator.is_main_process:
            merged.save_pretrained(final)
            processor.save_pretrained(final)
        return
    trainer.save_model(str(final))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(final)


def write_card(out: Path, argv_config: dict[str, Any], report: dict[str, Any], log_history: list[dict]) -> None:
    """``final/card.json``: base model, the parsed recipe, data counts, last metrics, git commit and
    the pinned library versions (STYLE.md section 10: every artifact carries its card)."""
    import transformers
    import trl

    from models.artifact import git_commit

    last = {k: v for h in log_history if "loss" in h for k, v in h.items()}  # the newest value of each metric
    card = {"kind": "dpo-vlm", **argv_config, "data": report, "last_train_log": last,
            "git_commit": git_commit(Path(__file__).resolve().parents[2]) or "unknown",
            "versions": {"trl": trl.__version__, "transformers": transformers.__version__}}
    (out / "final").mkdir(parents=True, exist_ok=True)
    (out / "final" / "card.json").write_text(json.dumps(card, indent=2, default=str), encoding="utf-8")


def train(data_args: SpaVLDataArgs, job: DPOJobArgs, training_args: Any, model_args: Any) -> dict[str, Any]:
    """Run one DPO job end to end; returns ``{"log_history", "data_report", "output_dir"}``."""
    from trl import DPOTrainer

    out = Path(training_args.output_dir)
    model, processor = load_model_and_processor(model_args, job.freeze_vision_tower)
    train_ds, eval_ds, report = prepare_data(data_args, job, training_args.max_length, processor,
                                             training_args.dataset_num_proc)
    checkpoint = resume_arg(training_args)
    trainer = DPOTrainer(
        model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
        processing_class=processor, peft_config=peft_config_for(model_args, job),
        callbacks=[JsonlLogCallback(out / "metrics.jsonl"), ReloadCheckpointWeightsCallback(checkpoint)],
    )  # fmt: skip
    trainer.train(resume_from_checkpoint=checkpoint)
    save_final(trainer, processor, out, job.merge_lora)
    plain = write_report(out / "data_report.json", report)
    if trainer.accelerator.is_main_process:
        config = {"base_model": model_args.model_name_or_path, "beta": training_args.beta,
                  "loss_type": training_args.loss_type, "learning_rate": training_args.learning_rate,
                  "use_peft": model_args.use_peft, "merged_lora": job.merge_lora, "data_source": asdict(data_args)}
        write_card(out, config, plain, trainer.state.log_history)
    return {"log_history": trainer.state.log_history, "data_report": plain, "output_dir": str(out)}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data_args, job, training_args, model_args = make_parser().parse_args_and_config(argv)
    result = train(data_args, job, training_args, model_args)
    last = next((h for h in reversed(result["log_history"]) if "train_loss" in h or "loss" in h), {})
    print(json.dumps({"output_dir": result["output_dir"], "last_log": last, "data": result["data_report"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
