"""``python -m training.align.rl``: on-policy RL (TRL's ``GRPOTrainer``) of a VLM against the VLM reward model.

Contract
--------
TRL 1.16 has no PPO trainer (it left the library); its on-policy trainers are ``GRPOTrainer``
and ``RLOOTrainer``. Both accept a VLM policy (``prompt`` + ``images`` columns), but a *model*
reward (``reward_funcs`` = a model id or ``nn.Module``) is loaded as
``AutoModelForSequenceClassification`` and fed **text only** (``reward_processing_classes`` are
tokenizers; images never reach it), which would blind an image-conditioned safety reward. What
works, and what this module does: the ``train-reward`` model wrapped as a *callable* reward
function (``VLMRewardFunction``); GRPO passes every dataset column to callables, so the reward
sees each prompt's images. ``main(argv)`` parses ``--config recipe.yaml`` with ``TrlParser`` into
``(SpaVLDataArgs, RLJobArgs, GRPOConfig, ModelConfig)`` and trains on SPA-VL prompts (the
preference pairs' questions and images; chosen/rejected are dropped).

    python -m training.align.rl --config training/configs/llava15_7b_grpo_lora.yaml
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.align.data.source import SpaVLDataArgs, load_preference_splits


@dataclass
class RLJobArgs:
    """The reward model and job knobs outside ``GRPOConfig``/``ModelConfig``."""

    reward_model_path: str | None = field(default=None, metadata={"help": "train-reward output folder."})
    reward_batch_size: int = field(default=8, metadata={"help": "Completions scored per reward forward."})
    reward_device: str = field(default="auto", metadata={"help": "Device of the reward model: cpu | cuda | auto."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the policy's vision encoder frozen."})
    lora_target_regex: str | None = field(default=None, metadata={"help": "PEFT target_modules regex (LM only)."})

    def __post_init__(self) -> None:
        if not self.reward_model_path:
            raise ValueError("reward_model_path is required (a `spaguard train-reward` output folder)")
        if self.reward_batch_size < 1:
            raise ValueError("reward_batch_size must be >= 1")


def _text(content: Any) -> str:
    """The text of a message's content (a string, or structured blocks)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _prompt_images(prompt: list[dict[str, Any]]) -> list[Any]:
    return [part["image"] for m in prompt if not isinstance(m["content"], str)
            for part in m["content"] if part.get("type") == "image" and part.get("image") is not None]


class VLMRewardFunction:
    """A GRPO reward function backed by a ``train-reward`` model: one scalar per completion.

    Called by TRL as ``f(prompts=..., completions=..., images=..., **kwargs)`` with conversational
    prompts/completions; the images come from the ``images`` column (or, failing that, from image
    blocks inside the prompt)."""

    def __init__(self, path: str, batch_size: int = 8, device: str = "auto") -> None:
        from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

        from training.align.reward import load_reward_model, score_pairs

        self.model, processor, self.card = load_reward_model(path, device=device)
        self.collator = DataCollatorForVisionPreference(processor=processor)
        self._score_pairs = score_pairs
        self.batch_size = batch_size
        self.__name__ = "vlm_reward"  # TRL logs rewards under the callable's name

    def __call__(self, prompts: list, completions: list, images: list | None = None, **_: Any) -> list[float]:
        rows = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            imgs = list(images[i]) if images is not None and images[i] is not None else _prompt_images(prompt)
            question = _text(next(m["content"] for m in reversed(prompt) if m["role"] == "user"))
            answer = _text(completion[-1]["content"]) if isinstance(completion, list) else str(completion)
            turn = [{"role": "assistant", "content": answer}]
            rows.append({"images": imgs, "prompt": [{"role": "user", "content": question}],
                         "chosen": turn, "rejected": turn})
        rewards, _ = self._score_pairs(self.model, self.collator, rows, self.batch_size)
        return rewards


def prompt_dataset(data_args: SpaVLDataArgs):
    """SPA-VL preference rows → GRPO prompt rows (``prompt`` + ``images``)."""
    train, _, report = load_preference_splits(data_args)
    return train.select_columns(["prompt", "images"]), report  # works on streaming datasets too


def make_parser():
    from trl import GRPOConfig, ModelConfig, TrlParser

    return TrlParser((SpaVLDataArgs, RLJobArgs, GRPOConfig, ModelConfig))


def train(data_args: SpaVLDataArgs, job: RLJobArgs, grpo_args: Any, model_args: Any) -> dict[str, Any]:
    """Run one GRPO job; returns ``{"log_history", "output_dir"}``."""
    from trl import GRPOTrainer

    from training.align.dpo import DPOJobArgs, JsonlLogCallback, load_model_and_processor, peft_config_for, save_final

    model, processor = load_model_and_processor(model_args, job.freeze_vision_tower)
    dataset, report = prompt_dataset(data_args)
    out = Path(grpo_args.output_dir)
    reward_fn = VLMRewardFunction(job.reward_model_path, job.reward_batch_size, job.reward_device)
    peft = peft_config_for(model_args, DPOJobArgs(lora_target_regex=job.lora_target_regex))
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_fn], args=grpo_args, train_dataset=dataset,
                          processing_class=processor, peft_config=peft,
                          callbacks=[JsonlLogCallback(out / "metrics.jsonl")])
    trainer.train()
    save_final(trainer, processor, out, merge_lora=True)  # final/ loads with from_pretrained, like DPO's
    (out / "data_report.json").write_text(json.dumps({k: v.as_dict() for k, v in report.items()}, indent=2))
    return {"log_history": trainer.state.log_history, "output_dir": str(out)}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data_args, job, grpo_args, model_args = make_parser().parse_args_and_config(argv)
    torch.manual_seed(grpo_args.seed)
    result = train(data_args, job, grpo_args, model_args)
    print(json.dumps({"output_dir": result["output_dir"], "last_log": result["log_history"][-1]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
