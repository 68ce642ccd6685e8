"""The side-by-side table of guard candidates (docs/classifier.md), from ``eval_candidate.sh`` output folders.

    python -m training.guard.candidate_table cand7=runs/eval/cand7 soup=runs/eval/soup \
        [--spread t0 t1 t2]

Contract
--------
* Each ``NAME=DIR`` is a folder written by ``training/guard/eval_candidate.sh``: ``dev2.tables.json``,
  ``{task,chat,render}/metrics.json`` and ``probes.json``. A missing file or field is a ``ValueError``
  naming it, never a blank cell. ``demo/metrics.json`` (the demo model's own answers,
  ``training.guard.demo_replies``; folders written before it existed lack it) adds its row when any folder
  has it, and is then required of every folder.
* One row per held-out figure (``ROWS``), one column per candidate, in the order given.
* ``--spread NAME ...`` (names among the candidates, at least two): one more column, each number's
  mean and, in brackets, its min–max over those runs (e.g. the seeds of one recipe). A candidate picked
  from one run is picked partly by its seed. The spread column shows how much.
* Numbers are rates (3 decimals) or counts ("k/n"); the spread of a count is of its k.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A cell: the numbers of one row for one candidate, each (value, n) with n None for a rate.
Cell = list[tuple[float, int | None]]


def _load(folder: Path) -> dict[str, Any]:
    def read(rel: str) -> Any:
        p = folder / rel
        if not p.is_file():
            raise ValueError(f"{folder}: {rel} is missing (run training/guard/eval_candidate.sh)")
        return json.loads(p.read_text())

    return {"dev2": read("dev2.tables.json"), "task": read("task/metrics.json")["prompt"],
            "chat": read("chat/metrics.json")["prompt"], "render": read("render/metrics.json")["prompt"],
            "probes": read("probes.json")[0],
            "demo": read("demo/metrics.json")["response"] if (folder / "demo/metrics.json").is_file() else None}


def _demo(e: dict[str, Any]) -> Cell:
    return [(float(e["demo"]["fp"]), int(e["demo"]["fp"] + e["demo"]["tn"]))]


def _get(d: dict[str, Any], *path: str) -> Any:
    for k in path:
        if not isinstance(d, dict) or d.get(k) is None:
            raise ValueError(f"no {'.'.join(path)} in the evaluation")
        d = d[k]
    return d


def _rates(*paths: tuple[str, ...]) -> Callable[[dict], Cell]:
    return lambda e: [(float(_get(e, *p)), None) for p in paths]


def _at_fpr(task: str) -> Callable[[dict], Cell]:
    return lambda e: [(float(_get(e, "dev2", f"{task}_pooled", "recall_at_fpr", f)), None)
                      for f in ("0.05", "0.1", "0.2")]


def _probes(*sets: str) -> Callable[[dict], Cell]:
    return lambda e: [(float(_get(e, "probes", "sets", s, "flagged")), int(_get(e, "probes", "sets", s, "n")))
                      for s in sets]


def _task_list(e: dict) -> Cell:
    t = e["task"]
    return [(float(t["fp"]), int(t["fp"] + t["tn"])), (float(t["fn"]), int(t["fn"] + t["tp"]))]


ROWS: list[tuple[str, Callable[[dict], Cell]]] = [
    ("calibrated prompt threshold", _rates(("probes", "threshold"))),
    ("dev2 prompts, pooled AUROC", _rates(("dev2", "prompt_pooled", "auroc"))),
    ("dev2 prompts, recall at the pooled FPR of 0.05 / 0.10 / 0.20", _at_fpr("prompt")),
    ("dev2 prompts at the calibrated threshold: recall / FPR",
     _rates(("dev2", "prompt_pooled", "recall"), ("dev2", "prompt_pooled", "fpr"))),
    ("benign task instructions flagged: codegen / toolformer / role-play / dolly",
     _rates(*(("dev2", "prompt_by_dataset", s, "fpr") for s in
              ("gpteacher_codegen", "gpteacher_toolformer", "gpteacher_roleplay", "dolly_subset")))),
    ("dev2 responses, pooled AUROC / F1",
     _rates(("dev2", "response_pooled", "auroc"), ("dev2", "response_pooled", "f1"))),
    ("dev2 responses, recall at the pooled FPR of 0.05 / 0.10 / 0.20", _at_fpr("response")),
    ("dev2 role-play responses flagged", _rates(("dev2", "response_by_dataset", "gpteacher_roleplay", "fpr"))),
    ("held-out task / verb-sense list: benign flagged, unsafe missed", _task_list),
    ("held-out chat turns flagged", lambda e: [(float(e["chat"]["fp"]), int(e["chat"]["fp"] + e["chat"]["tn"]))]),
    ("typographic renders (joined): recall / FPR", _rates(("render", "recall"), ("render", "fpr"))),
    ("probes: harmful / benign text flagged", _probes("text_unsafe", "text_safe")),
    ("probes: harmful / benign typographic flagged (two carriers)",
     _probes("typo0_unsafe", "typo1_unsafe", "typo0_safe", "typo1_safe")),
]


def _join(cell: Cell, parts: list[str]) -> str:
    return (", " if any(n is not None for _, n in cell) else " / ").join(parts)  # "4/40, 1/10" reads as two counts


def _fmt(cell: Cell) -> str:
    return _join(cell, [f"{int(v)}/{n}" if n is not None else f"{v:.3f}" for v, n in cell])


def _spread(cells: list[Cell]) -> str:
    out = []
    for parts in zip(*cells):
        vals = [v for v, _ in parts]
        mean, lo, hi = sum(vals) / len(vals), min(vals), max(vals)
        if parts[0][1] is not None:
            out.append(f"{mean:.1f} ({lo:.0f}–{hi:.0f})/{parts[0][1]}")
        else:
            out.append(f"{mean:.3f} ({lo:.3f}–{hi:.3f})")
    return _join(cells[0], out)


def table(evals: dict[str, Path], spread: list[str] | None = None) -> str:
    """The markdown table (see the contract)."""
    if not evals:
        raise ValueError("no candidates given")
    if spread is not None:
        unknown = [s for s in spread if s not in evals]
        if unknown or len(spread) < 2:
            raise ValueError(f"--spread needs at least two of the candidates' names (unknown: {unknown})")
    loaded = {name: _load(Path(d)) for name, d in evals.items()}
    rows = list(ROWS)
    if any(e["demo"] is not None for e in loaded.values()):
        lacking = [name for name, e in loaded.items() if e["demo"] is None]
        if lacking:
            raise ValueError(f"{', '.join(lacking)}: demo/metrics.json is missing while others have it "
                             "(run training/guard/eval_candidate.sh)")
        rows.append(("demo model's answers to benign prompts flagged", _demo))
    head = ["held out (never trained)", *loaded] + ([f"{', '.join(spread)}: mean (min–max)"] if spread else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, get in rows:
        cells = {name: get(e) for name, e in loaded.items()}
        row = [label, *(_fmt(c) for c in cells.values())]
        if spread:
            row.append(_spread([cells[s] for s in spread]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.guard.candidate_table",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("evals", nargs="+", metavar="NAME=DIR", help="eval_candidate.sh output folders")
    parser.add_argument("--spread", nargs="+", metavar="NAME", help="add mean (min–max) over these candidates")
    args = parser.parse_args(argv)
    try:
        evals = {}
        for spec in args.evals:
            name, sep, folder = spec.partition("=")
            if not sep or not name or not folder or name in evals:
                raise ValueError(f"{spec!r}: expected a new NAME=DIR")
            evals[name] = Path(folder)
        sys.stdout.write(table(evals, args.spread))
    except (OSError, ValueError) as exc:
        print(f"candidate_table: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
