"""``spaguard eval-guard``: evaluate a harm classifier on guard-schema JSONL.

    spaguard eval-guard --data FILE.jsonl [--root DIR] [--model PATH]
                        [--backend torch|onnx|onnx-int8] --out DIR

Scoring goes through ``models.backends.load_backend`` (the path the service uses). Writes
``DIR/metrics.json`` shaped ``{"prompt": M, "response": M, "latency_ms": {"p50", "p95", ...},
"by_category": {...}}`` with M = ``{"n","tp","fp","tn","fn","recall","fpr","precision","f1","auroc",
"auprc","ece"}`` (a value is null where undefined, M is null when the task has no labels),
``DIR/summary.md`` and PNG plots (ROC, PR, reliability diagram) per task.

Definitions: positives are label 1 (unsafe); tp/fp/tn/fn use the backend's ``flagged``; AUROC and
AUPRC (average precision) use ``unsafe_prob``; ECE is the binary reliability gap over 10
equal-width probability bins: Σ_b (n_b / n) · |mean(y in b) − mean(p in b)|.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.backends import GuardInput, ScoringBackend, Verdict
from training.guard.guard_data import TASKS, GuardExample, read_guard_jsonl

ECE_BINS = 10


@dataclass
class TaskScores:
    """Labels, calibrated probabilities and flags of one task, aligned; ``categories`` per item."""

    labels: np.ndarray
    probs: np.ndarray
    flags: np.ndarray
    categories: list[str | None]


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else float(num) / float(den)


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> float:
    """Binary ECE over ``bins`` equal-width bins of ``probs`` (the last bin includes 1.0)."""
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            total += mask.sum() / len(probs) * abs(labels[mask].mean() - probs[mask].mean())
    return float(total)


def binary_metrics(labels: Sequence[int], probs: Sequence[float], flags: Sequence[bool]) -> dict | None:
    """The M dict for one task, or None when there are no labelled items."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(labels, dtype=int)
    p = np.asarray(probs, dtype=float)
    f = np.asarray(flags, dtype=bool)
    if not (len(y) == len(p) == len(f)):
        raise ValueError("labels, probs and flags must have the same length")
    if len(y) == 0:
        return None
    tp, fp = int(((y == 1) & f).sum()), int(((y == 0) & f).sum())
    tn, fn = int(((y == 0) & ~f).sum()), int(((y == 1) & ~f).sum())
    recall, precision = _ratio(tp, tp + fn), _ratio(tp, tp + fp)
    if recall is None or precision is None:
        f1 = None
    else:
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    both = 0 < y.sum() < len(y)
    return {
        "n": int(len(y)), "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "recall": recall, "fpr": _ratio(fp, fp + tn), "precision": precision, "f1": f1,
        "auroc": float(roc_auc_score(y, p)) if both else None,
        "auprc": float(average_precision_score(y, p)) if y.sum() > 0 else None,
        "ece": expected_calibration_error(y, p),
    }


def task_items(examples: Sequence[GuardExample], task: str) -> list[tuple[GuardInput, int, str | None]]:
    """(input, label, category) for every example labelled for ``task`` (null labels skipped)."""
    out = []
    for ex in examples:
        label = ex.label(task)
        if label is None:
            continue
        item = ex.prompt_input() if task == "prompt" else ex.response_input()
        out.append((item, label, ex.category))
    return out


def score_all(backend: ScoringBackend, items: Sequence[GuardInput],
              batch_size: int) -> tuple[list[Verdict], list[float]]:
    """Score in batches; returns verdicts and the per-item latency (batch wall time / batch size)."""
    size = max(1, min(batch_size, backend.max_batch_size))
    verdicts: list[Verdict] = []
    per_item_ms: list[float] = []
    for start in range(0, len(items), size):
        batch = list(items[start:start + size])
        t0 = time.perf_counter()
        got = backend.score(batch)
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        if len(got) != len(batch):
            raise RuntimeError(f"backend returned {len(got)} verdicts for {len(batch)} inputs")
        verdicts.extend(got)
        per_item_ms.extend([elapsed_ms / len(batch)] * len(batch))
    return verdicts, per_item_ms


def evaluate(examples: Sequence[GuardExample], backend: ScoringBackend,
             batch_size: int = 32) -> tuple[dict[str, Any], dict[str, TaskScores]]:
    """Score both tasks and build the metrics dict (see the module docstring)."""
    metrics: dict[str, Any] = {}
    scores: dict[str, TaskScores] = {}
    latencies: list[float] = []
    for task in TASKS:
        rows = task_items(examples, task)
        if not rows:
            metrics[task] = None
            continue
        verdicts, lat = score_all(backend, [r[0] for r in rows], batch_size)
        latencies.extend(lat)
        ts = TaskScores(np.array([r[1] for r in rows]), np.array([v.unsafe_prob for v in verdicts]),
                        np.array([v.flagged for v in verdicts]), [r[2] for r in rows])
        scores[task] = ts
        metrics[task] = binary_metrics(ts.labels, ts.probs, ts.flags)
    lat_arr = np.asarray(latencies)
    metrics["latency_ms"] = {
        "p50": float(np.percentile(lat_arr, 50)) if len(lat_arr) else None,
        "p95": float(np.percentile(lat_arr, 95)) if len(lat_arr) else None,
        "batch_size": batch_size, "per": "item (batch wall time / batch size)",
    }
    metrics["by_category"] = by_category(scores)
    return metrics, scores


def by_category(scores: dict[str, TaskScores]) -> dict[str, dict[str, dict | None]]:
    """{task: {category: M}} for items that carry a category (empty when none do)."""
    out: dict[str, dict[str, dict | None]] = {}
    for task, ts in scores.items():
        groups: dict[str, list[int]] = defaultdict(list)
        for i, cat in enumerate(ts.categories):
            if cat is not None:
                groups[cat].append(i)
        if groups:
            out[task] = {cat: binary_metrics(ts.labels[idx], ts.probs[idx], ts.flags[idx])
                         for cat, idx in sorted(groups.items())}
    return out


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def summary_markdown(metrics: dict[str, Any], title: str) -> str:
    """A human-readable table of ``metrics`` (the JSON stays the source of truth)."""
    keys = ("n", "tp", "fp", "tn", "fn", "recall", "fpr", "precision", "f1", "auroc", "auprc", "ece")
    lines = [f"# {title}", "", "| task | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for task in TASKS:
        m = metrics.get(task)
        cells = [_fmt(m[k]) for k in keys] if m else ["no labels"] + [""] * (len(keys) - 1)
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    lat = metrics["latency_ms"]
    lines += ["", f"Latency per item: p50 {_fmt(lat['p50'])} ms, p95 {_fmt(lat['p95'])} ms "
              f"(batch size {lat['batch_size']})."]
    for task, cats in metrics.get("by_category", {}).items():
        lines += ["", f"## {task} by category", "", "| category | n | recall | fpr | auroc |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c} | {_fmt(m and m['n'])} | {_fmt(m and m['recall'])} | "
                  f"{_fmt(m and m['fpr'])} | {_fmt(m and m['auroc'])} |" for c, m in cats.items()]
    return "\n".join(lines) + "\n"


def write_plots(scores: dict[str, TaskScores], out_dir: Path) -> list[Path]:
    """ROC, PR and reliability-diagram PNGs per task (only where both classes are present)."""
    import matplotlib

    matplotlib.use("Agg")  # NOTE: headless; no display on CI
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve, roc_curve

    written = []
    for task, ts in scores.items():
        y, p = ts.labels, ts.probs
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, p)
            prec, rec, _ = precision_recall_curve(y, p)
            for name, xs, ys, xl, yl in (("roc", fpr, tpr, "false-positive rate", "recall"),
                                         ("pr", rec, prec, "recall", "precision")):
                fig, ax = plt.subplots(figsize=(4, 4))
                ax.plot(xs, ys)
                ax.set(xlabel=xl, ylabel=yl, title=f"{task} {name.upper()}")
                written.append(out_dir / f"{task}_{name}.png")
                fig.savefig(written[-1], dpi=80)
                plt.close(fig)
        idx = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
        conf = [p[idx == b].mean() for b in range(ECE_BINS) if (idx == b).any()]
        acc = [y[idx == b].mean() for b in range(ECE_BINS) if (idx == b).any()]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.plot(conf, acc, marker="o")
        ax.set(xlabel="predicted P(unsafe)", ylabel="observed unsafe rate", title=f"{task} reliability")
        written.append(out_dir / f"{task}_reliability.png")
        fig.savefig(written[-1], dpi=80)
        plt.close(fig)
    return written


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spaguard eval-guard", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="guard-schema JSONL file")
    p.add_argument("--root", default=None, help="image root (default: the data file's folder)")
    p.add_argument("--model", default=None, help="classifier artifact dir (default: models/default)")
    p.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"),
                   help="scoring runtime (models.backends.load_backend kind)")
    p.add_argument("--batch-size", type=int, default=32, help="items per backend call")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    p.add_argument("--out", required=True, help="output folder for metrics.json, summary.md, plots")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if args.batch_size < 1:
        raise SystemExit("eval-guard: --batch-size must be ≥ 1")
    try:
        examples = read_guard_jsonl(args.data, args.root)
    except (OSError, ValueError) as exc:  # bad input: one clear line, exit 2 (no traceback)
        print(f"spaguard eval-guard: error: {exc}", file=sys.stderr)
        return 2
    from models.backends import load_backend  # the same door the service uses

    backend = load_backend(args.backend, args.model, threads=args.threads,
                           max_batch_size=args.batch_size)
    metrics, scores = evaluate(examples, backend, args.batch_size)
    metrics["data"] = str(args.data)
    metrics["model"] = str(args.model or "models/default")
    metrics["backend"] = args.backend
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(metrics, f"eval-guard: {Path(args.data).name}"))
    write_plots(scores, out)
    print(summary_markdown(metrics, f"eval-guard: {Path(args.data).name}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
