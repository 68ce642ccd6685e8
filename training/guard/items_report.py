"""Per-source tables from ``spaguard eval-guard --items``: the same shape as the leave-one-dataset-out report.

    .venv/bin/python -m training.guard.items_report runs/dev2_heldout/old_items.jsonl \\
        --skip prompt:gptfuzz_labeled_responses --out runs/dev2_heldout/old_by_source.json

Contract
--------
* ``per_source(records, skip)``: ``{"prompt_by_dataset": {dataset: M}, "prompt_macro": ...,
  "response_by_dataset": ..., "response_macro": ...}`` where ``M`` is ``training.guard.evaluate.binary_metrics``
  of that dataset's records at the flags the scored artifact gave (its own calibrated threshold) and the macro
  is ``training.guard.crossval.macro_summary`` (every source counts once). ``skip`` names ``task:dataset``
  pairs left out (e.g. a source whose prompts repeat another's questions).
* ``per_source`` also gives ``"{task}_pooled"``: the same metrics over every (unskipped) record of the task
  at once, plus ``recall_at_fpr`` for each of ``fprs``: the share of unsafe records scoring above the score
  that at most that share of the safe records exceed (recall at a matched false-positive rate, so two
  artifacts with different thresholds compare at one operating point).
* The CLI prints ``training.guard.crossval.lodo_markdown`` of it and optionally writes the JSON: so a model
  that never saw a pack is scored on it as a true held-out figure, in the table the LODO headline uses.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from training.guard.crossval import lodo_markdown, macro_summary
from training.guard.evaluate import binary_metrics


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines eval-guard wrote; a line without task, dataset, label, unsafe_prob, flagged raises."""
    out = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        rec = json.loads(line)
        missing = [k for k in ("task", "dataset", "label", "unsafe_prob", "flagged") if k not in rec]
        if missing:
            raise ValueError(f"{path}:{n}: missing {missing}")
        out.append(rec)
    return out


def _metrics(rs: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    return binary_metrics([int(r["label"]) for r in rs], [float(r["unsafe_prob"]) for r in rs],
                          [bool(r["flagged"]) for r in rs])


def recall_at_fpr(rs: Sequence[dict[str, Any]], fpr: float) -> float | None:
    """Share of unsafe ``rs`` scoring above the score that ``floor(fpr * n_safe)`` safe ones exceed (module doc);
    None without both labels."""
    safe = sorted((float(r["unsafe_prob"]) for r in rs if int(r["label"]) == 0), reverse=True)
    unsafe = [float(r["unsafe_prob"]) for r in rs if int(r["label"]) == 1]
    if not safe or not unsafe:
        return None
    bar = safe[min(int(fpr * len(safe)), len(safe) - 1)]
    return sum(p > bar for p in unsafe) / len(unsafe)


def per_source(records: Iterable[dict[str, Any]], skip: Sequence[str] = (),
               fprs: Sequence[float] = ()) -> dict[str, Any]:
    """Per-(task, dataset) metrics at the recorded flags, each task's macro average and its pooled metrics."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if f"{rec['task']}:{rec['dataset']}" not in set(skip):
            grouped.setdefault((rec["task"], rec["dataset"]), []).append(rec)
    out: dict[str, Any] = {}
    for task in ("prompt", "response"):
        per = {ds: _metrics(rs) for (t, ds), rs in sorted(grouped.items()) if t == task}
        if per:
            out[f"{task}_by_dataset"], out[f"{task}_macro"] = per, macro_summary(per)
            pooled = [r for (t, _), rs in grouped.items() if t == task for r in rs]
            out[f"{task}_pooled"] = {**(_metrics(pooled) or {}),
                                     "recall_at_fpr": {str(f): recall_at_fpr(pooled, f) for f in fprs}}
    return out


def pooled_markdown(report: dict[str, Any]) -> str:
    """One line per task: n, AUROC, recall / FPR / F1 at the recorded flags, and recall at each matched FPR."""
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| pooled | n | AUROC | recall | FPR | F1 | recall at FPR |", "|---|---|---|---|---|---|---|"]
    for task in ("prompt", "response"):
        m = report.get(f"{task}_pooled")
        if m:
            at = ", ".join(f"{f}: {fmt(r)}" for f, r in m["recall_at_fpr"].items()) or "-"
            lines.append(f"| {task} | {m['n']} | {fmt(m['auroc'])} | {fmt(m['recall'])} | {fmt(m['fpr'])} | "
                         f"{fmt(m['f1'])} | {at} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", help="eval-guard --items JSONL")
    p.add_argument("--skip", nargs="*", default=[], help="task:dataset pairs to leave out")
    p.add_argument("--out", type=Path, help="also write the tables' JSON here")
    p.add_argument("--recall-at-fpr", type=float, nargs="*", default=[],
                   help="matched false-positive rates for the pooled recall (e.g. 0.05 0.1 0.2)")
    args = p.parse_args(argv)
    try:
        report = per_source(read_items(args.items), args.skip, args.recall_at_fpr)
    except (OSError, ValueError) as exc:
        print(f"items_report: error: {exc}", file=sys.stderr)
        return 2
    print(lodo_markdown(report))
    print(pooled_markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
