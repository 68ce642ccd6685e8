"""``spaguard crossval-finetune``: sources held out for the LoRA fine-tune, the frozen recipe on the same folds.

    spaguard crossval-finetune --config training/configs/guard_dd2_lora.yaml --source_folds 5 \\
        --output_dir runs/lodo_lora [--flag value ...]

What a fine-tuned encoder does on data it has never seen, measured the way ``spaguard crossval-guard`` measures
the frozen recipe, with both arms side by side on the same folds.

Contract
--------
* The recipe's sources (datasets) are dealt into ``source_folds`` folds (seeded; each source in exactly one).
  For each fold, every item of its sources, and every item sharing a near-copy cluster with them, is held out.
  With ``source_folds`` equal to the number of sources this is leave-one-dataset-out; fewer folds hold several
  sources out at once (less training data: a harder test), so the fine-tunes (one per fold) fit a budget.
* On the rest, as ``spaguard train-guard`` and ``finetune-guard`` do it:
  the inner split is ``training.guard.calibrate.split_items`` (the recipe's ``calib_fraction``, ``calib_sources``
  and seed); the **frozen** arm trains its heads on the cached features (``warm_epochs``) and calibrates on the
  inner held-out part; the **lora** arm starts from those heads (``finetune.build_lora_model``), is fine-tuned with
  the encoder in the loop on the same training part (the recipe's ``epochs``, ``max_train_items``) and is
  calibrated on the same inner part. Nothing of a fold's held-out sources trains or calibrates either arm.
* Both arms score the fold's held-out items at their own calibration; metrics per held-out source and task
  (``training.guard.evaluate.binary_metrics``) and their macro (``crossval.macro_summary``: each source once).
* With ``ablate_sources`` (a data ablation: e.g. every source of one pack) two more arms, ``frozen_without`` and
  ``lora_without``, are built the same way from each fold's training part **minus those sources' items**; their
  calibration items and held-out items are the full arms', so the pairs differ only in what trained. A named
  source the recipe does not have is an error (a typo would otherwise ablate nothing).
* Writes ``output_dir/lodo_finetune.json`` (``{"folds", "frozen", "lora", ["frozen_without", "lora_without",]
  "ablated_sources", "data", "seconds"}``, each arm in ``crossval-guard``'s shape) and
  ``output_dir/lodo_finetune.md`` (every arm's macro rows side by side, then its tables), and prints the macro
  summary as JSON.

Cost: one encoder fine-tune per fold (two with ``ablate_sources``). On the 2-core CPU box the full dev + dev2
recipe takes about 45 min per fine-tune, so run it on a GPU (``--threads`` is ignored there) or cap
``max_train_items`` and say so.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.artifact import sigmoid
from training.guard.calibrate import split_items, train_and_calibrate
from training.guard.config import config_field
from training.guard.crossval import lodo_markdown, macro_summary
from training.guard.distill import load_examples
from training.guard.evaluate import binary_metrics
from training.guard.finetune import (FinetuneConfig, build_lora_model, calibrate_arm, finetune, labelled_items,
                                     predict_items, resolve_ocr)
from training.guard.heads import build_head_data, build_model, predict_heads
from training.guard.recipe_cli import recipe_main

TASKS = ("prompt", "response")
ARMS = ("frozen", "lora")
ABLATED_ARMS = ("frozen_without", "lora_without")


@dataclass
class LodoFinetuneConfig(FinetuneConfig):
    """A LoRA fine-tune recipe plus how its sources are held out (strict YAML + CLI parser)."""

    source_folds: int = config_field(5, "Folds the sources are dealt into; each fold is held out once (one "
                                        "fine-tune per fold). The number of sources = leave-one-dataset-out.")
    warm_epochs: int = config_field(15, "Epochs of each fold's frozen heads (train-guard's default recipe): the "
                                        "frozen arm and the LoRA arm's warm start.")
    ablate_sources: list[str] = config_field([], "Sources also kept out of a second pair of arms (frozen_without, "
                                                 "lora_without) that train on each fold's training part minus "
                                                 "them, calibrate on the same items and score the same held-out "
                                                 "ones: what these sources add on data neither arm has seen.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source_folds < 2 or self.warm_epochs < 1:
            raise ValueError("source_folds must be ≥ 2 and warm_epochs ≥ 1")


def deal_sources(sources: list[str], folds: int, seed: int) -> list[list[str]]:
    """``sources`` dealt round-robin, in a seeded order, into at most ``folds`` non-empty folds (sorted)."""
    order = [sources[i] for i in np.random.default_rng(seed).permutation(len(sources))]
    dealt = [sorted(order[k::folds]) for k in range(min(folds, len(order)))]
    return [f for f in dealt if f]


def fold_split(data, fold: list[str], cfg: FinetuneConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(held, fit_idx, cal_idx)`` for one fold: every item of ``fold``'s sources is held out; nothing sharing a
    near-copy cluster with them trains or calibrates; the rest is cut by ``calibrate.split_items``."""
    groups, clusters = np.array(data.groups), np.array(data.cv_groups)
    held = np.flatnonzero(np.isin(groups, fold))
    train = np.flatnonzero(~np.isin(groups, fold) & ~np.isin(clusters, clusters[held]))
    fit_idx, cal_idx = split_items(data, train, cfg.calib_fraction, cfg.seed, cfg.calib_sources)
    return held, fit_idx, cal_idx


def finetune_and_score(model, items, pair_items, data, split: tuple[np.ndarray, np.ndarray, np.ndarray],
                       cfg: FinetuneConfig, preds: dict[int, tuple[float, bool]]) -> float:
    """Fine-tune ``model`` on ``fit_idx``, calibrate it on ``cal_idx`` as train-guard does, and ``record`` its
    held-out verdicts into ``preds``; ``split`` is ``(fit_idx, cal_idx, held)``. Returns the fine-tune's seconds."""
    fit_idx, cal_idx, held = split
    t0 = time.perf_counter()
    finetune(model, items, pair_items, data, fit_idx, cfg)
    seconds = round(time.perf_counter() - t0, 1)
    out = predict_items(model, items, np.concatenate([cal_idx, held]), data.task)
    c = len(cal_idx)
    cal = calibrate_arm(data, cal_idx, {key: v[:c] for key, v in out.items()}, model.config.node_keys, cfg)
    record(preds, out["task"][c:], held, data, cal)
    return seconds


def macro_rows(label: str, reports: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table of each report's macro row per task, one line per (name, task)."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [f"| {label} | task | sources | recall | FPR | F1 | AUROC |", "|---|---|---|---|---|---|---|"]
    for name, rep in reports.items():
        for task in TASKS:
            m = rep.get(f"{task}_macro")
            if m:
                n = len(rep[f"{task}_by_dataset"])
                lines.append(f"| {name} | {task} | {n} | {fmt(m['recall'])} | {fmt(m['fpr'])} | {fmt(m['f1'])} | "
                             f"{fmt(m['auroc'])} |")
    return lines


def record(preds: dict[int, tuple[float, bool]], logits: np.ndarray, idx: np.ndarray, data, cal: dict) -> None:
    """Store each of ``idx``'s calibrated probability and verdict (its own task's) under its item index."""
    for i, z in zip(idx, logits):
        task = TASKS[int(data.task[i])]
        p = float(sigmoid(z, cal["temperature"][task]))
        preds[int(i)] = (p, p >= cal["threshold"][task])


def arm_report(data, preds: dict[int, tuple[float, bool]]) -> dict[str, Any]:
    """Per held-out source and task metrics of one arm, with their macro, in ``crossval-guard``'s shape."""
    out: dict[str, Any] = {}
    groups = np.array(data.groups)
    for t, task in enumerate(TASKS):
        per: dict[str, Any] = {}
        for g in sorted({data.groups[i] for i in preds if data.task[i] == t}):
            idx = [i for i in sorted(preds) if data.task[i] == t and groups[i] == g]
            per[g] = binary_metrics([data.label_key(i) for i in idx], [preds[i][0] for i in idx],
                                    [preds[i][1] for i in idx])
        if per:
            out[f"{task}_by_dataset"], out[f"{task}_macro"] = per, macro_summary(per)
    return out


def run(cfg: LodoFinetuneConfig, argv: list[str] | None = None) -> dict[str, Any]:
    """Both arms over every fold; see the module docstring. Returns (and writes) the report."""
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    examples, pairs, counts = load_examples(cfg)
    unknown = sorted(set(cfg.ablate_sources) - {e.group for e in examples})
    if unknown:  # checked before the encoding pass: a typo would otherwise ablate nothing, silently
        raise ValueError(f"ablate_sources names sources the recipe does not have: {', '.join(unknown)}")
    frozen = build_model(cfg)
    data = build_head_data(frozen, examples, pairs, cfg)  # frozen features: train-guard's cache
    items, pair_items = labelled_items(examples, pairs)
    if len(items) != data.n:
        raise ValueError(f"item order drifted from build_head_data ({len(items)} != {data.n})")
    items, pair_items = resolve_ocr(frozen, items), resolve_ocr(frozen, pair_items)
    folds = deal_sources(sorted(set(data.groups)), cfg.source_folds, cfg.seed)
    arms = ARMS + (ABLATED_ARMS if cfg.ablate_sources else ())
    preds: dict[str, dict[int, tuple[float, bool]]] = {arm: {} for arm in arms}
    fold_log = []
    for k, fold in enumerate(folds):
        held, fit_idx, cal_idx = fold_split(data, fold, cfg)
        entry = {"sources": fold, "held_out": int(len(held)), "trained": int(len(fit_idx)),
                 "calibrated": int(len(cal_idx)),
                 "finetune_seconds": both_arms(frozen, items, pair_items, data, (fit_idx, cal_idx, held), cfg,
                                               preds["frozen"], preds["lora"])}
        if cfg.ablate_sources:
            kept = fit_idx[~np.isin(np.array(data.groups)[fit_idx], cfg.ablate_sources)]
            entry["trained_without"] = int(len(kept))
            entry["finetune_seconds_without"] = both_arms(frozen, items, pair_items, data, (kept, cal_idx, held),
                                                          cfg, preds["frozen_without"], preds["lora_without"])
        fold_log.append(entry)
        print(f"crossval-finetune: fold {k + 1}/{len(folds)} done ({', '.join(fold)})", file=sys.stderr)
    report = {"folds": fold_log, **{arm: arm_report(data, preds[arm]) for arm in arms},
              "ablated_sources": sorted(cfg.ablate_sources), "data": counts, "encoder": cfg.encoder, "seed": cfg.seed,
              "command": "spaguard crossval-finetune " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seconds": round(time.perf_counter() - t0, 1)}
    write_report(cfg.output_dir, "lodo_finetune", report, markdown(report))
    return report


def both_arms(frozen, items, pair_items, data, split: tuple[np.ndarray, np.ndarray, np.ndarray],
              cfg: LodoFinetuneConfig, frozen_preds: dict[int, tuple[float, bool]],
              lora_preds: dict[int, tuple[float, bool]]) -> float:
    """One fold's frozen arm (``warm_epochs`` of heads on ``fit_idx``, calibrated on ``cal_idx``) and its LoRA
    fine-tune warm-started from those heads; both record their ``held`` verdicts. ``split`` is
    ``(fit_idx, cal_idx, held)``. Returns the fine-tune's seconds."""
    fit_idx, cal_idx, held = split
    warm = dataclasses.replace(cfg, epochs=cfg.warm_epochs)
    cal_frozen, _ = train_and_calibrate(frozen, data, fit_idx, cal_idx, warm)
    record(frozen_preds, predict_heads(frozen, data, held)["task"], held, data, cal_frozen)
    return finetune_and_score(build_lora_model(cfg, frozen), items, pair_items, data, split, cfg, lora_preds)


def write_report(output_dir: str | Path, stem: str, report: dict[str, Any], md: str) -> None:
    """``output_dir/stem.json`` (the report, indented) and ``output_dir/stem.md``; the folder is created."""
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(md)


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The macro rows of both arms: what to compare."""
    return {arm: {key: report[arm][key] for key in (f"{t}_macro" for t in TASKS) if key in report[arm]}
            for arm in ARMS + ABLATED_ARMS if arm in report}


def subset(arm_report_: dict[str, Any], keep) -> dict[str, Any]:
    """``arm_report_`` restricted to the held-out sources ``keep(source)`` accepts, its macro rows recomputed."""
    out: dict[str, Any] = {}
    for task in TASKS:
        per = {g: m for g, m in arm_report_.get(f"{task}_by_dataset", {}).items() if keep(g)}
        if per:
            out[f"{task}_by_dataset"], out[f"{task}_macro"] = per, macro_summary(per)
    return out


def render(report_path: str | Path) -> None:
    """Rewrite ``lodo_finetune.md`` beside ``report_path`` (a ``lodo_finetune.json``) from the JSON."""
    path = Path(report_path)
    (path.parent / "lodo_finetune.md").write_text(markdown(json.loads(path.read_text())))


def markdown(report: dict[str, Any]) -> str:
    """Macro rows side by side, then each arm's per-source tables."""
    arms = [arm for arm in ARMS + ABLATED_ARMS if arm in report]
    lines = macro_rows("arm", {arm: report[arm] for arm in arms}) + [""]
    ablated = set(report.get("ablated_sources") or ())
    if ablated:
        lines += [f"`*_without` arms: trained without {', '.join(sorted(ablated))}.", ""]
        for label, keep in (("held-out sources outside the ablation", lambda g: g not in ablated),
                            ("held-out ablated sources", lambda g: g in ablated)):
            lines += macro_rows(label, {arm: subset(report[arm], keep) for arm in arms}) + [""]
    for arm in arms:
        lines += [f"### {arm}", "", lodo_markdown(report[arm])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return recipe_main(LodoFinetuneConfig, run, "spaguard crossval-finetune", summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
