"""``spaguard train-reward``: a VLM reward model (scalar head) trained on SPA-VL chosen/rejected.

Contract
--------
``VLMRewardModel`` = a VLM backbone (``AutoModelForImageTextToText``'s inner ``.model``, no LM
head) + ``Linear(hidden, 1)`` on the hidden state of each sequence's last real token. It scores a
(prompt + image, response) conversation; training minimises the pairwise loss
``-log σ(r_chosen - r_rejected)`` (Bradley-Terry). Batches come from TRL's own
``DataCollatorForVisionPreference`` (chosen rows first, then rejected), so prompts, images and
chat templates are built exactly as in DPO.

NOTE: TRL 1.16's ``RewardTrainer`` is text-only: it loads
``AutoModelForSequenceClassification`` with an ``AutoTokenizer`` and tokenizes ``chosen``/``rejected``
strings; no image path reaches the model, and no ``*ForSequenceClassification`` exists for LLaVA or
Qwen2-VL. Hence this small loop (AdamW, linear warm-up-free schedule, JSONL logging).

Outputs in ``output_dir``: ``backbone/`` (``save_pretrained`` + processor), ``reward_head.safetensors``,
``reward_card.json`` (``pairwise_accuracy``, ``reward_offset`` = midpoint of mean chosen and
rejected rewards, used to turn rewards into soft unsafe labels) and ``metrics.jsonl``.

    spaguard train-reward --config training/configs/llava15_7b_reward.yaml
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.align.data.source import SpaVLDataArgs, load_preference_splits

# Collator outputs the backbone does not take.
_DROP_KEYS = ("completion_mask",)


@dataclass
class RewardJobConfig:
    """One reward-model job (model, optimisation, output); data comes from ``SpaVLDataArgs``."""

    model_name_or_path: str | None = field(default=None, metadata={"help": "VLM hub id or local checkpoint."})
    output_dir: str = field(default="runs/reward", metadata={"help": "Where the reward model is written."})
    dtype: str = field(default="float32", metadata={"help": "Backbone dtype: float32 | bfloat16 | float16."})
    freeze_vision_tower: bool = field(default=True, metadata={"help": "Keep the vision encoder frozen."})
    train_backbone: bool = field(default=True, metadata={"help": "Train the backbone too (False: head only)."})
    learning_rate: float = field(default=1e-5, metadata={"help": "AdamW learning rate of the backbone."})
    head_learning_rate: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the head."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    num_train_epochs: int = field(default=1, metadata={"help": "Passes over the train pairs."})
    max_steps: int = field(default=-1, metadata={"help": "Stop after this many steps (-1: epochs decide)."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Pairs per step."})
    max_length: int | None = field(default=None, metadata={"help": "Truncate sequences (keeps the start)."})
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps to metrics.jsonl."})
    seed: int = field(default=42, metadata={"help": "Seed for the head init and data order."})
    device: str = field(default="auto", metadata={"help": "cpu | cuda | auto."})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the language model (0: no LoRA)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_target_regex: str = field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        metadata={"help": "PEFT target_modules regex (full match) of the LoRA adapters."},
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations (memory)."})

    def __post_init__(self) -> None:
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.per_device_train_batch_size < 1 or self.num_train_epochs < 1:
            raise ValueError("per_device_train_batch_size and num_train_epochs must be >= 1")
        if self.lora_r < 0 or (self.lora_r and not self.train_backbone):
            raise ValueError("lora_r must be >= 0, and LoRA needs train_backbone: true")


class VLMRewardModel(nn.Module):
    """VLM backbone + scalar head; ``forward(**collated) -> (B,)`` rewards."""

    def __init__(self, vlm: nn.Module, seed: int = 0) -> None:
        super().__init__()
        self.vlm = vlm
        hidden = vlm.config.get_text_config().hidden_size
        gen = torch.Generator().manual_seed(seed)
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(hidden), generator=gen)
            self.head.bias.zero_()
        self.head.to(next(vlm.parameters()).dtype)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in _DROP_KEYS}
        out = self.vlm.model(**inputs, use_cache=False)
        hidden = out.last_hidden_state  # (B, T, H)
        # The collator flushes left: the last real token sits at (number of real tokens - 1).
        last = inputs["attention_mask"].sum(dim=1) - 1  # (B,)
        pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]  # (B, H)
        return self.head(pooled).squeeze(-1).float()  # (B,)


def pairwise_loss(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``rewards`` = (2B,) chosen then rejected → (loss, accuracy, margin)."""
    chosen, rejected = rewards.chunk(2)  # (B,), (B,)
    margin = chosen - rejected
    return -nn.functional.logsigmoid(margin).mean(), (margin > 0).float().mean(), margin.mean()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: RewardJobConfig):
    """``(VLMRewardModel, processor)`` from ``cfg.model_name_or_path``."""
    from training.align.dpo import load_vlm_for_training

    vlm, processor = load_vlm_for_training(cfg.model_name_or_path, cfg.freeze_vision_tower, dtype=cfg.dtype)
    if not cfg.train_backbone:
        vlm.requires_grad_(False)
    peft_model = None
    if cfg.lora_r:
        from peft import LoraConfig, get_peft_model

        # get_peft_model injects the adapters into ``vlm``'s own modules and freezes the rest;
        # the wrapper is kept only to merge before saving.
        peft_model = get_peft_model(vlm, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                                                    target_modules=cfg.lora_target_regex))
    if cfg.gradient_checkpointing:
        vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    vlm.config.use_cache = False
    model = VLMRewardModel(vlm, cfg.seed)
    model.peft_wrappers = [peft_model] if peft_model is not None else []  # a list: not a registered submodule
    return model, processor


@torch.no_grad()
def score_pairs(model: VLMRewardModel, collator: Any, rows: list[dict[str, Any]], batch_size: int = 8):
    """Rewards of each row's chosen and rejected response: two lists, in row order."""
    model.eval()
    device = next(model.parameters()).device
    chosen: list[float] = []
    rejected: list[float] = []
    for i in range(0, len(rows), batch_size):
        batch = collator([dict(r) for r in rows[i : i + batch_size]])
        r = model(**{k: v.to(device) for k, v in batch.items()})
        c, j = r.chunk(2)
        chosen += c.tolist()
        rejected += j.tolist()
    return chosen, rejected


def _optimizer(model: VLMRewardModel, cfg: RewardJobConfig) -> torch.optim.Optimizer:
    backbone = [p for p in model.vlm.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": cfg.head_learning_rate}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.learning_rate})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def fit(model: VLMRewardModel, collator: Any, train_rows: list[dict], cfg: RewardJobConfig) -> list[dict]:
    """The training loop; returns the logged records (also appended to ``metrics.jsonl``). Each
    epoch reshuffles and drops the last partial batch (fixed batch shapes)."""
    if len(train_rows) < cfg.per_device_train_batch_size:
        raise ValueError(f"{len(train_rows)} train pairs < per_device_train_batch_size="
                         f"{cfg.per_device_train_batch_size}: no full batch to train on")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    opt = _optimizer(model, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    logs, step, bs = [], 0, cfg.per_device_train_batch_size
    for _epoch in range(cfg.num_train_epochs):
        order = torch.randperm(len(train_rows), generator=gen).tolist()
        for i in range(0, len(order) - bs + 1, bs):
            model.train()
            batch = collator([dict(train_rows[j]) for j in order[i : i + bs]])
            loss, acc, margin = pairwise_loss(model(**{k: v.to(device) for k, v in batch.items()}))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == 1 or step % cfg.logging_steps == 0:
                rec = {"step": step, "loss": loss.item(), "accuracy": acc.item(), "margin": margin.item()}
                logs.append(rec)
                with (out / "metrics.jsonl").open("a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")
            if 0 < cfg.max_steps <= step:
                return logs
    return logs


def save(model: VLMRewardModel, processor: Any, out: Path, card: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    for wrapper in getattr(model, "peft_wrappers", []):
        wrapper.merge_and_unload()  # folds the adapters into model.vlm's weights, in place
    model.peft_wrappers = []
    model.vlm.save_pretrained(out / "backbone")
    processor.save_pretrained(out / "backbone")
    save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, out / "reward_head.safetensors")
    (out / "reward_card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")


def load_reward_model(path: str | Path, device: str = "auto"):
    """``(VLMRewardModel, processor, card)`` saved by ``train-reward``."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / "reward_head.safetensors").is_file():
        raise FileNotFoundError(f"{path}: not a reward model directory (no reward_head.safetensors)")
    cfg = RewardJobConfig(model_name_or_path=str(path / "backbone"), freeze_vision_tower=False, device=device)
    model, processor = build(cfg)
    model.head.load_state_dict(load_file(path / "reward_head.safetensors"))
    card = json.loads((path / "reward_card.json").read_text(encoding="utf-8"))
    return model.to(_device(device)).eval(), processor, card


def train(data_args: SpaVLDataArgs, cfg: RewardJobConfig) -> dict[str, Any]:
    """Run one job end to end; returns the reward card."""
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from models.artifact import git_commit

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model, processor = build(cfg)
    model.to(_device(cfg.device))
    train_ds, eval_ds, report = load_preference_splits(data_args)
    collator = DataCollatorForVisionPreference(processor=processor, max_length=cfg.max_length)
    train_rows = list(train_ds)
    logs = fit(model, collator, train_rows, cfg)
    eval_rows = list(eval_ds) if eval_ds is not None else train_rows
    chosen, rejected = score_pairs(model, collator, eval_rows)
    accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen)
    card = {
        "pairwise_accuracy": accuracy, "accuracy_on": "eval" if eval_ds is not None else "train",
        "reward_offset": (sum(chosen) / len(chosen) + sum(rejected) / len(rejected)) / 2,
        "mean_reward_chosen": sum(chosen) / len(chosen), "mean_reward_rejected": sum(rejected) / len(rejected),
        "loss_first": logs[0]["loss"] if logs else None, "loss_last": logs[-1]["loss"] if logs else None,
        "data": {k: v.as_dict() for k, v in report.items()}, "base_model": cfg.model_name_or_path,
        "seconds": round(time.perf_counter() - t0, 1), "config": asdict(cfg), "data_source": asdict(data_args),
        "git_commit": git_commit(Path(__file__).resolve().parents[2]) or "unknown",
    }
    save(model, processor, Path(cfg.output_dir), card)
    return card


def make_parser():
    from trl import TrlParser

    return TrlParser((SpaVLDataArgs, RewardJobConfig))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    data_args, cfg = make_parser().parse_args_and_config(argv)
    card = train(data_args, cfg)
    print(json.dumps({k: card[k] for k in ("pairwise_accuracy", "reward_offset", "loss_first", "loss_last")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
