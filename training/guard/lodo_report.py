"""``spaguard crossval-guard``: leave-one-dataset-out for a training recipe, without building an artifact.

    spaguard crossval-guard --config training/configs/guard_default.yaml --out runs/lodo [--flag value ...]

The generalisation figure to quote: for every source of the recipe, the whole head recipe (features, heads,
calibration on an inner split) is trained without that source and without anything sharing a near-copy
cluster with it, then scored on it (``training.guard.crossval``); the prompt and the response heads each get a
table per held-out source and its macro average (every source counts once). Takes the recipe's YAML and flags
like ``spaguard train-guard`` (``DistillConfig``); ``cv_leave_one_dataset_out`` is forced on, k-fold off.
Writes ``<out>/lodo.json`` (the metrics) and ``<out>/lodo.md`` (the tables), and prints the tables.
``--into ARTIFACT_DIR`` also records them in that artifact's ``card.json`` (``metrics.leave_one_dataset_out``,
with ``metrics.lodo_source`` naming the command): the headline figure in the model card of the artifact built
from the same recipe (train-guard, or the LoRA fine-tune warm-started from it), without a second run.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from training.guard.card_record import record
from training.guard.config import DistillConfig
from training.guard.crossval import cross_validate, lodo_markdown, response_leave_one_source_out
from training.guard.distill import load_examples
from training.guard.heads import build_head_data, build_model


def run(cfg: DistillConfig) -> dict[str, Any]:
    """Leave-one-dataset-out metrics for ``cfg``'s data and head recipe."""
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    cfg = dataclasses.replace(cfg, cv_folds=0, cv_leave_one_dataset_out=True)
    examples, pairs, counts = load_examples(cfg)
    model = build_model(cfg)
    data = build_head_data(model, examples, pairs, cfg)
    lodo = cross_validate(model, data, cfg)["leave_one_dataset_out"]
    if (data.task == 1).any():
        lodo.update(response_leave_one_source_out(model, data, cfg))
    return {"data": counts, "encoder": cfg.encoder, "seed": cfg.seed, "leave_one_dataset_out": lodo,
            "seconds": round(time.perf_counter() - t0, 1)}


def record_in_card(artifact: Path, report: dict[str, Any], command: str) -> None:
    """Put ``report``'s leave-one-dataset-out metrics into ``artifact/card.json`` (atomic rewrite)."""
    record(artifact, {"leave_one_dataset_out": report["leave_one_dataset_out"],
                      "lodo_source": {"command": command, "data": report["data"], "seconds": report["seconds"]}})


def main(argv: list[str] | None = None) -> int:
    from trl import TrlParser

    args = list(sys.argv[1:] if argv is None else argv)
    out, into = Path("runs/lodo"), None
    command = "spaguard crossval-guard " + " ".join(args)
    for flag in ("--out", "--into"):  # ours, not DistillConfig fields
        if flag in args:
            at = args.index(flag)
            if at + 1 >= len(args):
                print(f"spaguard crossval-guard: error: {flag} needs a value", file=sys.stderr)
                return 2
            if flag == "--out":
                out = Path(args[at + 1])
            else:
                into = Path(args[at + 1])
            del args[at:at + 2]
    if into is not None and not (into / "card.json").is_file():
        print(f"spaguard crossval-guard: error: --into {into}: no card.json there", file=sys.stderr)
        return 2
    try:
        (cfg,) = TrlParser(DistillConfig).parse_args_and_config(args)
        report = run(cfg)
    except (OSError, ValueError) as exc:  # bad config or data: one clear line, exit 2
        print(f"spaguard crossval-guard: error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    (out / "lodo.json").write_text(json.dumps(report, indent=2) + "\n")
    table = lodo_markdown(report["leave_one_dataset_out"])
    (out / "lodo.md").write_text(table)
    if into is not None:
        record_in_card(into, report, command)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
