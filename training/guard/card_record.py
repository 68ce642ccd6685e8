"""Held-out figures recorded in an artifact's ``card.json``, so the model card carries the measurement that
predicts unseen data next to the model it describes.

    python -m training.guard.card_record --into models/default --finetune-report runs/lodo/lodo_finetune.json

Contract
--------
* ``record(artifact, metrics)`` merges ``metrics`` into ``card.json``'s ``metrics`` (key by key; other keys stay)
  with an atomic rewrite; a folder without a ``card.json`` is an error (``FileNotFoundError``), never a new card.
* ``finetune_metrics(report, command)`` is what of a ``spaguard crossval-finetune`` report goes into a card:
  ``metrics.source_folds_finetune`` = every arm's per-source tables and macro rows, the folds (which sources each
  held out, how many items trained), the ablated sources, the command that produced them and the one that recorded them.
* The CLI reads a ``lodo_finetune.json`` and records it; a missing or malformed report, or a folder without a
  card, is one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

def record(artifact: str | Path, metrics: dict[str, Any]) -> None:
    """Merge ``metrics`` into ``artifact/card.json``'s ``metrics`` (atomic rewrite; the card must exist)."""
    path = Path(artifact) / "card.json"
    card = json.loads(path.read_text())
    card.setdefault("metrics", {}).update(metrics)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def finetune_metrics(report: dict[str, Any], command: str) -> dict[str, Any]:
    """``{"source_folds_finetune": ...}`` from a ``crossval-finetune`` report (see the module docstring)."""
    missing = [k for k in ("folds", "frozen", "lora") if k not in report]
    if missing:
        raise ValueError(f"not a crossval-finetune report (no {', '.join(missing)})")
    # Everything but the report's data counts: the card has its own, those of the model it describes.
    block = {key: value for key, value in report.items() if key != "data"}
    block.setdefault("ablated_sources", [])
    return {"source_folds_finetune": {**block, "recorded_by": command}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.guard.card_record",
                                description="Record a crossval-finetune report in an artifact's card.json.")
    p.add_argument("--into", required=True, help="artifact folder holding card.json")
    p.add_argument("--finetune-report", required=True, help="lodo_finetune.json of spaguard crossval-finetune")
    args = p.parse_args(argv)
    command = "python -m training.guard.card_record " + " ".join(sys.argv[1:] if argv is None else argv)
    try:
        if not (Path(args.into) / "card.json").is_file():
            raise FileNotFoundError(f"--into {args.into}: no card.json there")
        report = json.loads(Path(args.finetune_report).read_text())
        if not isinstance(report, dict):
            raise ValueError(f"{args.finetune_report}: not a JSON object")
        record(args.into, finetune_metrics(report, command))
    except (OSError, ValueError) as exc:
        print(f"card_record: error: {exc}", file=sys.stderr)
        return 2
    print(f"card_record: recorded {args.finetune_report} in {args.into}/card.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
