"""Per-group errors of a fine-tuned guard on ``training.guard.finetune``'s measured split.

``finetune_report.json`` gives one pooled figure per task; this breaks the same measured items
down by source group (confusion counts at the artifact's own calibration) and recomputes the
pooled metrics without chosen groups, e.g. a derived group whose near-copies may sit in training
(the split is by item, not by CV cluster). Rebuilds the split exactly as ``finetune.run`` does,
so ``--init_from`` must be the frozen artifact the fine-tune started from (same data and seed).

    .venv/bin/python -m training.guard.heldout_groups --config training/configs/guard_lora.yaml \\
        --init_from runs/cand4_frozen --model models/default --exclude resp_context_swap
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from models.artifact import sigmoid
from training.guard.evaluate import binary_metrics

TASKS = ("prompt", "response")


def group_counts(groups: Sequence[str], labels: np.ndarray, flagged: np.ndarray) -> dict[str, dict[str, int]]:
    """{group: {"tp", "fp", "fn", "tn"}} for binary ``labels`` (1 = unsafe) and ``flagged``."""
    out: dict[str, dict[str, int]] = {}
    for g, y, f in zip(groups, labels.astype(bool), flagged.astype(bool)):
        c = out.setdefault(g, {"tp": 0, "fp": 0, "fn": 0, "tn": 0})
        c["tp" if y and f else "fp" if f else "fn" if y else "tn"] += 1
    return dict(sorted(out.items()))


def summarize(groups: Sequence[str], labels: np.ndarray, probs: np.ndarray, threshold: float,
              exclude: Sequence[str] = ()) -> dict[str, Any]:
    """Pooled metrics, pooled metrics without the ``exclude`` groups, and per-group counts."""
    flagged = probs >= threshold
    keep = np.array([g not in set(exclude) for g in groups], dtype=bool)
    return {"all": binary_metrics(list(labels.astype(int)), probs, flagged),
            "without": binary_metrics(list(labels[keep].astype(int)), probs[keep], flagged[keep]),
            "excluded": list(exclude), "groups": group_counts(groups, labels, flagged)}


def run(config: str, init_from: str, model_dir: str, exclude: Sequence[str]) -> dict[str, Any]:
    """Score the measured split of ``finetune.run`` with ``model_dir``; one ``summarize`` per task."""
    import torch
    import yaml

    from models.classifier import GuardClassifier
    from training.guard.distill import load_examples
    from training.guard.heads import build_head_data
    from training.guard.finetune import FinetuneConfig, _splits, labelled_items, predict_items, resolve_ocr

    cfg = FinetuneConfig(**yaml.safe_load(Path(config).read_text()), init_from=init_from)
    torch.set_num_threads(cfg.threads)
    examples, pairs, _ = load_examples(cfg)
    base = GuardClassifier.load(init_from)
    data = build_head_data(base, examples, pairs, replace(cfg, max_length=base.config.max_length,
                                                          use_ocr=base.config.use_ocr))
    model = GuardClassifier.load(model_dir)
    items = resolve_ocr(model, labelled_items(examples, pairs)[0])
    _, _, measured = _splits(data, cfg)
    cal = json.loads((Path(model_dir) / "calibration.json").read_text())
    report = {}
    for t, task in enumerate(TASKS):
        idx = measured[data.task[measured] == t]
        probs = sigmoid(predict_items(model, items, idx, data.task)["task"], cal["temperature"][task])
        report[task] = summarize([data.groups[i] for i in idx], (data.target[idx] >= 0.5).astype(int),
                                 probs, cal["threshold"][task], exclude)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="training/configs/guard_lora.yaml")
    p.add_argument("--init_from", required=True, help="the frozen artifact the fine-tune started from")
    p.add_argument("--model", default="models/default", help="the fine-tuned artifact to score")
    p.add_argument("--exclude", nargs="*", default=[], help="groups left out of the 'without' metrics")
    p.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = p.parse_args(argv)
    report = run(args.config, args.init_from, args.model, args.exclude)
    for task, r in report.items():
        a, w = r["all"], r["without"]
        print(f"{task}: n {a['n']} f1 {a['f1']:.4f} auroc {a['auroc']:.4f} | without {r['excluded']}: "
              f"n {w['n']} f1 {w['f1']:.4f}")
        for g, c in r["groups"].items():
            print(f"    {g:28s} tp {c['tp']:4d} fp {c['fp']:4d} fn {c['fn']:4d} tn {c['tn']:4d}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
