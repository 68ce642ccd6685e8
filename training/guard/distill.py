"""``spaguard train-guard``: train / distill the guard classifier, calibrate it, write the artifact.

    spaguard train-guard --config training/configs/guard_default.yaml [--flag value ...]

Pipeline (deterministic for a seed): data named by ``DistillConfig`` (guard JSONL, preference pairs,
SPA-VL, typographic renders, benign photos) → optional LLM-judge soft labels for unlabelled items
→ frozen-encoder features, cached on disk by content hash → heads trained on a stratified split,
temperature + FPR thresholds fitted on the rest (``training.guard.calibrate``) → optional grouped k-fold
and leave-one-dataset-out CV → ``GuardClassifier.save`` (config, heads, calibration, card).
Targets: ``(1 − soft_weight)·BCE(hard) + soft_weight·T²·BCE_T(soft)`` with teacher soft labels
(JSONL ``soft_*_unsafe``, ``training.guard.teachers``); node targets from SPA-VL categories (benign: all
0); preference pairs add a ranking loss on the response head (rejected above chosen).
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.guard.guard_data import (GuardExample, PreferencePair, default_shared_dir, load_spa_vl,
                                 photo_examples, read_guard_jsonl, read_preference_pairs,
                                 typographic_examples)
from models.backends import GuardInput
from models.artifact import git_commit
from models.encoder_files import weights_sha256

REPO_ROOT = Path(__file__).resolve().parents[2]


def _f(default: Any, help_: str) -> Any:
    """A dataclass field with its one help string (lists get a fresh copy per instance)."""
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help_})
    return field(default=default, metadata={"help": help_})


@dataclass
class DistillConfig:
    """One training job of the guard classifier (parsed from YAML + CLI by ``TrlParser``)."""

    output_dir: str = _f("runs/guard", "Artifact directory to write (config, head, calibration, card).")
    seed: int = _f(0, "Seed for splits, rendering, initialisation and batch order.")
    threads: int = _f(2, "torch CPU threads.")
    encoder: str = _f("all-minilm-l6-v2", "Text encoder: alias, HF name or local path.")
    max_length: int = _f(256, "Token budget per item (prompt + OCR text [+ response]).")
    use_ocr: bool = _f(True, "Append OCR text of prompt images to the prompt text.")
    image_encoder: str | None = _f(None, "Optional CLIP/SigLIP vision tower; None = OCR only.")
    head_hidden: int = _f(256, "Width of the MLP trunk under the heads.")
    dropout: float = _f(0.1, "Trunk dropout while training.")
    data_root: str | None = _f(None, "Base folder of relative data paths; None = the shared dev pack "
                               "($SPAGUARD_SHARED_DIR or <repo>/../shared/data/dev).")
    guard_files: list[str] = _f([], "Guard-schema JSONL files or globs (relative to data_root).")
    pair_files: list[str] = _f([], "Preference-pair JSONL files (prompt, chosen, rejected).")
    max_pairs: int | None = _f(None, "Use at most this many pairs (seeded sample); None = all.")
    spa_vl_splits: list[str] = _f([], "SPA-VL splits via datasets.load_dataset('sqrti/SPA-VL').")
    spa_vl_parquet: list[str] = _f([], "Local parquet files in SPA-VL's format (offline).")
    spa_vl_limit: int | None = _f(None, "Rows per SPA-VL source; None = all.")
    template_prompts: bool = _f(False, "Add training.guard.hazard_data's weapons-agent and violent-idiom prompt "
                                       "templates (unsafe requests beside safe look-alikes).")
    ocr_format_count: int = _f(0, "Carrier prompt + text items in the form OCR'd image text reaches the "
                               "classifier (training.guard.carrier_data), half unsafe.")
    typographic_count: int = _f(0, "Rendered typographic images (harmful and benign text).")
    photo_count: int = _f(0, "Labelled prompts paired with benign photos (+ captioning prompts).")
    response_items: int = _f(0, "About this many content-teaching response items (training.guard.response_data).")
    service_format_responses: bool = _f(False, "Score labelled responses as the service does "
                                        "(prompt tail + first response window).")
    judge_url: str | None = _f(None, "OpenAI-compatible base URL of an LLM judge that labels "
                               "unlabelled prompts/responses (soft labels); None = no judge.")
    judge_model: str = _f("md-judge", "Model name sent to the judge endpoint.")
    soft_weight: float = _f(0.5, "Weight of the soft (teacher) term where hard labels also exist.")
    distill_temperature: float = _f(2.0, "Temperature T of the soft targets and student logits.")
    pair_weight: float = _f(0.3, "Weight of the pairwise ranking loss on the response head.")
    node_weight: float = _f(0.3, "Weight of the node (taxonomy) multi-label loss.")
    group_balance: float = _f(0.5, "Item weight ∝ n_group^-x: 0 = none, 1 = equal total per dataset.")
    epochs: int = _f(40, "Passes over the cached features.")
    batch_size: int = _f(256, "Items per optimiser step.")
    learning_rate: float = _f(2e-3, "AdamW learning rate for the heads.")
    weight_decay: float = _f(1e-2, "AdamW weight decay.")
    calib_fraction: float = _f(0.2, "Held-out share (stratified) for temperature and thresholds.")
    target_fpr: float = _f(0.05, "Task thresholds flag at most this share of held-out benign items.")
    node_target_fpr: float = _f(0.01, "Per-node thresholds' false-positive rate on benign items.")
    cv_folds: int = _f(0, "k for grouped, stratified k-fold CV reported in the card (0 = skip).")
    cv_leave_one_dataset_out: bool = _f(False, "Also report leave-one-dataset-out metrics.")
    cache_dir: str = _f("runs/guard_cache", "On-disk cache of encoder features (by content hash).")

    def __post_init__(self) -> None:
        if not (0.0 <= self.soft_weight <= 1.0 and 0.0 < self.calib_fraction < 1.0):
            raise ValueError("soft_weight must be in [0, 1] and calib_fraction in (0, 1)")
        if self.distill_temperature <= 0 or self.epochs < 1 or self.batch_size < 1:
            raise ValueError("distill_temperature must be > 0, epochs and batch_size ≥ 1")
        if not (0.0 <= self.target_fpr < 1.0 and 0.0 <= self.node_target_fpr < 1.0):
            raise ValueError("target_fpr and node_target_fpr must be in [0, 1)")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError("cv_folds must be 0 (off) or ≥ 2")
        if not (self.guard_files or self.spa_vl_splits or self.spa_vl_parquet):
            raise ValueError("no training data: set guard_files, spa_vl_splits or spa_vl_parquet")

    def resolved_root(self) -> Path:
        return Path(self.data_root) if self.data_root else default_shared_dir(REPO_ROOT) / "data" / "dev"


def load_examples(cfg: DistillConfig) -> tuple[list[GuardExample], list[PreferencePair], dict]:
    """Every example and pair the config names, plus per-source counts for the card."""
    root, counts = cfg.resolved_root(), {}
    examples: list[GuardExample] = []
    for pattern in cfg.guard_files:
        paths = sorted(glob.glob(str(root / pattern)))
        if not paths:
            raise FileNotFoundError(f"guard_files entry {pattern!r} matched nothing under {root}")
        for path in paths:
            rows = read_guard_jsonl(path)
            counts[str(Path(path).relative_to(root))] = len(rows)
            examples += rows
    for split in cfg.spa_vl_splits:
        rows = load_spa_vl(split, limit=cfg.spa_vl_limit)
        counts[f"sqrti/SPA-VL:{split}"] = len(rows)
        examples += rows
    if cfg.spa_vl_parquet:
        files = [str(root / p) for p in cfg.spa_vl_parquet]
        rows = load_spa_vl("train", data_files=files, limit=cfg.spa_vl_limit)
        counts["spa_vl_parquet"] = len(rows)
        examples += rows
    pairs: list[PreferencePair] = []
    for path in cfg.pair_files:
        got = read_preference_pairs(root / path)
        if cfg.max_pairs is not None and len(got) > cfg.max_pairs:
            got = random.Random(cfg.seed).sample(got, cfg.max_pairs)
        counts[path] = len(got)
        pairs += got
    if cfg.template_prompts:
        from training.guard.hazard_data import hazard_prompts, idiom_prompts

        for name, rows in (("hazard_templates", hazard_prompts(cfg.seed)), ("idiom_templates", idiom_prompts(cfg.seed))):
            counts[f"prompt items: {name}"] = len(rows)
            examples += rows
    if cfg.ocr_format_count:
        from training.guard.carrier_data import ocr_format_examples

        rows = ocr_format_examples(examples, cfg.ocr_format_count, cfg.seed)
        counts["prompt items: ocr_format"] = len(rows)
        examples += rows
    if cfg.typographic_count:
        typo = typographic_examples(examples, cfg.typographic_count, cfg.seed)
        counts["typographic (rendered)"] = len(typo)
        examples += typo
    if cfg.photo_count:
        photos = photo_examples(examples, cfg.photo_count, cfg.seed)
        counts["benign photos (scikit-image)"] = len(photos)
        examples += photos
    from training.guard.response_data import add_response_data as add

    return add(examples, counts, cfg.response_items, cfg.service_format_responses, cfg.seed), pairs, counts



def build_model(cfg: DistillConfig):
    """A fresh ``GuardClassifier`` for the config (seeded initialisation)."""
    from models.artifact import ClassifierConfig
    from models.classifier import GuardClassifier

    torch.manual_seed(cfg.seed)
    return GuardClassifier(ClassifierConfig(
        encoder=cfg.encoder, max_length=cfg.max_length, use_ocr=cfg.use_ocr,
        image_encoder=cfg.image_encoder, head_hidden=cfg.head_hidden, dropout=cfg.dropout,
        encoder_trainable="frozen"))


@dataclass
class HeadData:
    """Cached trunk inputs + targets per item. ``task``: 0 prompt, 1 response; ``hard``/``soft``: NaN
    where absent; ``node_m``: known node targets; ``pair_x``: (chosen, rejected) reply features."""

    x: torch.Tensor  # (N, D)
    task: np.ndarray
    hard: np.ndarray
    soft: np.ndarray
    node_y: np.ndarray  # (N, K)
    node_m: np.ndarray  # (N, K)
    weight: np.ndarray
    groups: list[str]
    cv_groups: list[str]
    pair_x: torch.Tensor  # (P, 2, D)

    @property
    def n(self) -> int:
        return len(self.task)

    @property
    def target(self) -> np.ndarray:
        """The hard label where known, else the soft one (for splits and benign masks)."""
        return np.where(np.isnan(self.hard), self.soft, self.hard)

    def label_key(self, i: int) -> int:
        return int(self.target[i] >= 0.5)


def _content_key(item: GuardInput, prefix: str) -> str:
    h = hashlib.sha256(prefix.encode())
    for part in (item.text, "\x00", item.response or "\x01"):
        h.update(part.encode())
    for img in item.images:
        h.update(hashlib.sha256(img).digest())
    return h.hexdigest()


def _save_cache(cache: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(cache, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a killed build never leaves a torn cache


def encode_items(model, items: list[GuardInput], cfg: DistillConfig) -> torch.Tensor:
    """(N, D) trunk inputs from the frozen encoder, cached on disk by content hash; batches are
    sorted by length so that padding stays small."""
    prefix = json.dumps([cfg.encoder, weights_sha256(cfg.encoder), cfg.max_length, cfg.use_ocr,
                         cfg.image_encoder])
    cache_path = Path(cfg.cache_dir) / f"features-{_content_key(GuardInput(prefix), '')[:16]}.pt"
    cache: dict[str, torch.Tensor] = torch.load(cache_path) if cache_path.is_file() else {}
    keys = [_content_key(it, prefix) for it in items]
    todo = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values(),
                  key=lambda i: len(items[i].text) + len(items[i].response or ""))
    captured: list[torch.Tensor] = []
    hook = model.trunk.register_forward_pre_hook(lambda _m, args: captured.append(args[0].detach()))
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(todo), 32):
                batch = todo[start:start + 32]
                captured.clear()
                model(**model.featurize([items[i] for i in batch]))
                for i, row in zip(batch, captured[0]):
                    cache[keys[i]] = row.clone()
                if (start // 32) % 50 == 49:  # checkpoint: an interrupted build resumes here
                    _save_cache(cache, cache_path)
                    print(f"train-guard: encoded {start + len(batch)}/{len(todo)}", file=sys.stderr)
    finally:
        hook.remove()
    if todo:
        _save_cache(cache, cache_path)
    return torch.stack([cache[k] for k in keys]) if keys else torch.zeros(0)


def build_head_data(model, examples: list[GuardExample], pairs: list[PreferencePair],
                    cfg: DistillConfig) -> HeadData:
    """One item per (example, task) with a hard or soft label; features from ``encode_items``."""
    from training.guard.teachers import dataset_node_targets

    items, rows = [], []
    for ex in examples:
        for t, task in enumerate(("prompt", "response")):
            hard, soft = ex.label(task), ex.soft(task)
            if hard is None and soft is None:
                continue
            items.append(ex.prompt_input() if t == 0 else ex.response_input())
            ny, nm = dataset_node_targets(ex, hard if hard is not None else soft, model.config.node_keys)
            rows.append((t, hard, soft, ny, nm, ex))
    if not rows:
        raise ValueError("no labelled items: every example lacks hard and soft labels")
    pair_items = [GuardInput(p.prompt, p.images, r) for p in pairs for r in (p.chosen, p.rejected)]
    x = encode_items(model, items + pair_items, cfg)
    groups = [r[5].group for r in rows]
    counts = {g: groups.count(g) for g in set(groups)}
    weight = np.array([counts[g] ** -cfg.group_balance for g in groups])
    nan = float("nan")
    return HeadData(
        x=x[:len(items)], task=np.array([r[0] for r in rows]),
        hard=np.array([nan if r[1] is None else r[1] for r in rows], dtype=float),
        soft=np.array([nan if r[2] is None else r[2] for r in rows], dtype=float),
        node_y=np.array([r[3] for r in rows], dtype=np.float32),
        node_m=np.array([r[4] for r in rows], dtype=np.float32),
        weight=weight / weight.mean(), groups=groups, cv_groups=[r[5].cv_group for r in rows],
        pair_x=x[len(items):].reshape(len(pairs), 2, x.shape[-1]))  # (P, 2, D)


def _reset_heads(model, seed: int) -> None:
    torch.manual_seed(seed)
    for module in (*model.trunk, model.out):
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def _item_loss(z: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """Per-item mix of hard BCE and temperature-softened distillation BCE (× T²)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    has_h, has_s = ~torch.isnan(hard), ~torch.isnan(soft)
    t = cfg.distill_temperature
    soft_t = torch.sigmoid(torch.logit(soft.nan_to_num(0.5).clamp(1e-4, 1 - 1e-4)) / t)
    l_hard = bce(z, hard.nan_to_num(0.0), reduction="none")
    l_soft = bce(z / t, soft_t, reduction="none") * t * t
    w = torch.where(has_h & has_s, torch.tensor(cfg.soft_weight), has_s.float())
    return (1 - w) * l_hard * has_h + w * l_soft


def fit_heads(model, data: HeadData, idx: np.ndarray, cfg: DistillConfig) -> list[float]:
    """Train trunk + output layer on the cached features of ``idx``; returns per-epoch losses."""
    _reset_heads(model, cfg.seed)
    # NOTE(h4): one thread: (256 x 769) @ (769 x 256) steps gain nothing from intra-op threads, and
    # on a shared 2-core box spinning OpenMP workers made head training up to 40x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_loop(model, data, idx, cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_loop(model, data: HeadData, idx: np.ndarray, cfg: DistillConfig) -> list[float]:
    params = [p for m in (model.trunk, model.out) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    t = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    x, task, hard, soft = data.x[idx], t(data.task[idx]), t(data.hard[idx]), t(data.soft[idx])
    ny, nm, w = t(data.node_y[idx]), t(data.node_m[idx]), t(data.weight[idx])
    model.trunk.train()
    losses = []
    for _ in range(cfg.epochs):
        order, total = torch.randperm(len(idx), generator=gen), 0.0
        for s in range(0, len(idx), cfg.batch_size):
            b = order[s:s + cfg.batch_size]
            logits = model.out(model.trunk(x[b]))  # (b, 2 + K)
            z = torch.where(task[b] == 0, logits[:, 0], logits[:, 1])
            loss = (_item_loss(z, hard[b], soft[b], cfg) * w[b]).mean()
            node_l = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[:, 2:], ny[b], reduction="none") * nm[b]
            loss = loss + cfg.node_weight * node_l.sum() / nm[b].sum().clamp(min=1.0)
            if len(data.pair_x) and cfg.pair_weight > 0:
                p = torch.randint(len(data.pair_x), (min(len(b) // 4 + 1, len(data.pair_x)),), generator=gen)
                zc, zr = model.out(model.trunk(data.pair_x[p].flatten(0, 1))).view(len(p), 2, -1)[:, :, 1].T
                loss = loss + cfg.pair_weight * torch.nn.functional.softplus(zc - zr).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        losses.append(total / len(idx))
    model.eval()
    return losses


def predict_heads(model, data: HeadData, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Raw logits of each item's own task head, and node logits (eval mode: no dropout)."""
    model.eval()
    with torch.no_grad():
        logits = model.out(model.trunk(data.x[idx]))  # (n, 2 + K)
    own = np.where(data.task[idx] == 0, logits[:, 0].numpy(), logits[:, 1].numpy())
    return {"task": own.astype(np.float64), "nodes": logits[:, 2:].numpy().astype(np.float64)}


def run(cfg: DistillConfig, argv: list[str] | None = None) -> dict:
    """The whole job; returns the card written next to the weights."""
    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    t0 = time.perf_counter()
    examples, pairs, counts = load_examples(cfg)
    if cfg.judge_url:
        from training.guard.teachers import JudgeClient, judge_unlabelled

        examples = judge_unlabelled(examples, JudgeClient(cfg.judge_url, cfg.judge_model))
    model = build_model(cfg)
    data = build_head_data(model, examples, pairs, cfg)
    t_feat = time.perf_counter() - t0
    from training.guard.calibrate import response_leave_one_source_out as response_lodo
    from training.guard.calibrate import split_items, train_and_calibrate

    card_metrics: dict[str, Any] = {}
    if cfg.cv_folds or cfg.cv_leave_one_dataset_out:
        from training.guard.evaluate import cross_validate

        card_metrics = cross_validate(model, data, cfg)
        if cfg.cv_leave_one_dataset_out and (data.task == 1).any():
            card_metrics["leave_one_dataset_out"].update(response_lodo(model, data, cfg))
    train_idx, held_idx = split_items(data, np.arange(data.n), cfg.calib_fraction, cfg.seed)
    calibration, losses = train_and_calibrate(model, data, train_idx, held_idx, cfg)
    card = {
        "data": counts, "n_items": int(data.n), "n_pairs": len(data.pair_x),
        "git_commit": git_commit(REPO_ROOT) or "unknown", "seed": cfg.seed, "config": asdict(cfg),
        "command": "spaguard train-guard " + " ".join(argv if argv is not None else sys.argv[1:]),
        "metrics": card_metrics, "train_loss": {"first": losses[0], "last": losses[-1]},
        "calibration": {"target_fpr": cfg.target_fpr, "node_target_fpr": cfg.node_target_fpr,
                        "held_out_items": int(len(held_idx)),
                        "calibrated_tasks": sorted({("prompt", "response")[t] for t in data.task[held_idx]})},
        "build_seconds": {"features": round(t_feat, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    model.save(cfg.output_dir, card, calibration)
    return json.loads((Path(cfg.output_dir) / "card.json").read_text())


def make_parser():
    from trl import TrlParser

    return TrlParser(DistillConfig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        (cfg,) = make_parser().parse_args_and_config(args)
        card = run(cfg, args)
    except (OSError, ValueError) as exc:  # bad config or data: one clear line, exit 2
        print(f"spaguard train-guard: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: card[k] for k in ("metrics", "build_seconds")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
