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


def per_source(records: Iterable[dict[str, Any]], skip: Sequence[str] = ()) -> dict[str, Any]:
    """Per-(task, dataset) metrics at the recorded flags, plus each task's macro average."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rec in records:
        if f"{rec['task']}:{rec['dataset']}" not in set(skip):
            grouped.setdefault((rec["task"], rec["dataset"]), []).append(rec)
    out: dict[str, Any] = {}
    for task in ("prompt", "response"):
        per = {ds: binary_metrics([int(r["label"]) for r in rs], [float(r["unsafe_prob"]) for r in rs],
                                  [bool(r["flagged"]) for r in rs])
               for (t, ds), rs in sorted(grouped.items()) if t == task}
        if per:
            out[f"{task}_by_dataset"], out[f"{task}_macro"] = per, macro_summary(per)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("items", help="eval-guard --items JSONL")
    p.add_argument("--skip", nargs="*", default=[], help="task:dataset pairs to leave out")
    p.add_argument("--out", type=Path, help="also write the tables' JSON here")
    args = p.parse_args(argv)
    try:
        report = per_source(read_items(args.items), args.skip)
    except (OSError, ValueError) as exc:
        print(f"items_report: error: {exc}", file=sys.stderr)
        return 2
    print(lodo_markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
