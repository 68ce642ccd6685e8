"""Frozen-encoder features and the heads trained on them: the recipe every build and CV fold runs.

Contract
--------
* ``build_model(cfg)``: a fresh, seeded ``GuardClassifier`` with a frozen encoder.
* ``build_head_data(model, examples, pairs, cfg)``: one item per (example, task) with a hard or soft label;
  features from ``encode_items`` (cached on disk by content hash), node targets, group weights (times a
  source's ``extra["label_weight"]``, default 1).
* ``fit_heads(model, data, idx, cfg)`` trains trunk + output layer on ``idx``; ``predict_heads`` returns raw
  logits. ``item_loss`` is the per-item hard/soft mix (also used by the LoRA fine-tune).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.backends import GuardInput
from models.encoder_files import weights_sha256
from training.guard.config import DistillConfig
from training.guard.guard_data import GuardExample, PreferencePair
from training.guard.teachers import dataset_node_targets


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
                    cfg: DistillConfig, *, encode: bool = True) -> HeadData:
    """One item per (example, task) with a hard or soft label; features from ``encode_items``.
    ``encode=False``: labels, weights and groups only (``x`` and ``pair_x`` have no columns), for jobs that run
    every item through a fine-tuned encoder anyway (``training.guard.student_compare``)."""
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
    x = encode_items(model, items + pair_items, cfg) if encode else torch.zeros(len(items) + len(pair_items), 0)
    groups = [r[5].group for r in rows]
    counts = {g: groups.count(g) for g in set(groups)}
    # a source's label weight (training.guard.packs: set-level labels below per-item human ones) scales
    # its items on top of the group balance
    weight = np.array([counts[g] ** -cfg.group_balance * float(r[5].extra.get("label_weight", 1.0))
                       for g, r in zip(groups, rows)])
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


def item_loss(z: torch.Tensor, hard: torch.Tensor, soft: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
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
    # NOTE: one thread: (256 x 769) @ (769 x 256) steps gain nothing from intra-op threads, and
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
            loss = (item_loss(z, hard[b], soft[b], cfg) * w[b]).mean()
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
