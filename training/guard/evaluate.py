"""``spaguard eval-guard``: evaluate a harm classifier on guard-schema JSONL.

    spaguard eval-guard --data FILE.jsonl [--root DIR] [--model PATH]
                        [--backend torch|onnx|onnx-int8] --out DIR [--items ITEMS.jsonl]

Scoring is the server's: ``models.backends.load_backend`` and ``segmenter_for`` (the same windows, sentence
chunks, decoded variants, OCR and aggregation as ``service.guard``; ``training.guard.scoring``), with progress
on stderr. ``--items`` writes one JSON line per scored example for error analysis. Writes
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

from models.backends import IMAGE_READINGS, ScoringBackend, Segmenter
from training.guard.guard_data import TASKS, GuardExample, read_guard_jsonl
from training.guard.scoring import Scored, score_examples

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


def labelled(examples: Sequence[GuardExample], task: str) -> list[GuardExample]:
    """The examples labelled for ``task`` (null labels skipped)."""
    return [ex for ex in examples if ex.label(task) is not None]


class _Progress:
    """``eval-guard: prompt 1,024/9,363 items (12 s)`` on stderr, at most every 5 seconds and at the end."""

    def __init__(self, task: str) -> None:
        self.task, self.t0, self.last = task, time.perf_counter(), 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done == total or now - self.last >= 5.0:
            self.last = now
            print(f"eval-guard: {self.task} {done:,}/{total:,} items ({now - self.t0:.0f} s)", file=sys.stderr)


def evaluate(examples: Sequence[GuardExample], backend: ScoringBackend, batch_size: int = 32,
             segmenter: Segmenter | None = None,
             items_out: list[dict[str, Any]] | None = None) -> tuple[dict[str, Any], dict[str, TaskScores]]:
    """Score both tasks as the server does (``training.guard.scoring``) and build the metrics dict (see the
    module docstring). ``items_out``, if given, receives one record per scored example and task."""
    segmenter = segmenter or Segmenter()
    metrics: dict[str, Any] = {}
    scores: dict[str, TaskScores] = {}
    latencies: list[float] = []
    for task in TASKS:
        rows = labelled(examples, task)
        if not rows:
            metrics[task] = None
            continue
        got = score_examples(backend, segmenter, rows, task, batch_size, _Progress(task))
        latencies.extend(s.latency_ms for s in got)
        ts = TaskScores(np.array([ex.label(task) for ex in rows]), np.array([s.verdict.unsafe_prob for s in got]),
                        np.array([s.verdict.flagged for s in got]), [ex.category for ex in rows])
        scores[task] = ts
        metrics[task] = binary_metrics(ts.labels, ts.probs, ts.flags)
        if items_out is not None:
            items_out.extend(_item_record(ex, task, s) for ex, s in zip(rows, got))
    lat_arr = np.asarray(latencies)
    metrics["latency_ms"] = {
        "p50": float(np.percentile(lat_arr, 50)) if len(lat_arr) else None,
        "p95": float(np.percentile(lat_arr, 95)) if len(lat_arr) else None,
        "batch_size": batch_size, "per": "example (its items' share of batch wall time)",
    }
    metrics["by_category"] = by_category(scores)
    return metrics, scores


def _item_record(ex: GuardExample, task: str, s: Scored) -> dict[str, Any]:
    v = s.verdict
    return {"uid": ex.uid, "dataset": ex.group, "task": task, "label": ex.label(task),
            "unsafe_prob": round(v.unsafe_prob, 6), "flagged": v.flagged,
            "categories": {k: round(p, 4) for k, p in v.categories.items()}, "ocr_text": v.ocr_text,
            "n_items": s.n_items}


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
    p.add_argument("--items", default=None, help="also write one JSON line per scored example and task "
                   "(uid, dataset, task, label, unsafe_prob, flagged, categories, ocr_text, n_items)")
    p.add_argument("--no-decode", action="store_true", help="do not score decoded variants (base64, rot13, "
                   "...); the server always does")
    p.add_argument("--image-reading", default="joined", choices=IMAGE_READINGS,
                   help="how a prompt's images are read (models.segment.Segmenter.image_reading; the server's "
                   "--guard-image-reading): joined with the typed text, or their OCR text as an input of its own")
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
    from models.backends import load_backend, segmenter_for  # the same door the service uses

    backend = load_backend(args.backend, args.model, threads=args.threads,
                           max_batch_size=args.batch_size)
    records: list[dict[str, Any]] = []
    metrics, scores = evaluate(examples, backend, args.batch_size,
                               segmenter_for(args.model, decode=not args.no_decode, image_reading=args.image_reading),
                               records)
    if args.items:
        Path(args.items).parent.mkdir(parents=True, exist_ok=True)
        Path(args.items).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    metrics["data"] = str(args.data)
    metrics["model"] = str(args.model or "models/default")
    metrics["backend"] = args.backend
    metrics["image_reading"] = args.image_reading
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "summary.md").write_text(summary_markdown(metrics, f"eval-guard: {Path(args.data).name}"))
    write_plots(scores, out)
    print(summary_markdown(metrics, f"eval-guard: {Path(args.data).name}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
