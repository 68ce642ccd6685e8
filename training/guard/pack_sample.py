"""A seeded per-source sample of a data pack's labelled rows, for scoring a model on a pack it never saw.

    .venv/bin/python -m training.guard.pack_sample ../shared/data/dev2 runs/dev2_heldout/sample.jsonl \\
        --per-source 300 --per-image-source 100 --cap gptfuzz_labeled_responses=500 safetext_advice=500
    spaguard eval-guard --data runs/dev2_heldout/sample.jsonl --root ../shared/data/dev2 --model models/default \\
        --out runs/dev2_heldout/old --items runs/dev2_heldout/old_items.jsonl

Contract: ``sample_pack(pack, per_source, per_image_source, caps, seed)`` reads ``<pack>/index/*.jsonl`` in
name order (files starting with ``_`` are bookkeeping and skipped), keeps the rows with any non-null label, and
draws ``min(cap, n)`` rows per file with one ``random.Random(seed)``, where ``cap`` is ``caps[dataset file stem]``,
else ``per_image_source`` when the file's first labelled row has images, else ``per_source``. The rows are
returned unchanged (image paths stay relative to the pack, hence ``--root``).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from training.guard.packs import parse_assignments

LABELS = ("label_prompt_unsafe", "label_response_unsafe")


def sample_pack(pack: str | Path, per_source: int, per_image_source: int, caps: dict[str, int],
                seed: int = 0) -> list[dict[str, Any]]:
    """The seeded sample described in the module docstring."""
    files = sorted(p for p in (Path(pack) / "index").glob("*.jsonl") if not p.name.startswith("_"))
    if not files:
        raise ValueError(f"no index/*.jsonl under {pack}")
    rng, out = random.Random(seed), []
    for path in files:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = [r for r in rows if any(r.get(k) is not None for k in LABELS)]
        if not rows:
            continue
        cap = caps.get(path.stem, per_image_source if rows[0].get("images") else per_source)
        out += rng.sample(rows, min(cap, len(rows)))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pack", help="pack folder (holds index/*.jsonl)")
    p.add_argument("out", type=Path, help="output JSONL")
    p.add_argument("--per-source", type=int, default=300)
    p.add_argument("--per-image-source", type=int, default=100)
    p.add_argument("--cap", nargs="*", default=[], help="file stem=N overrides")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        caps = {k: int(v) for k, v in parse_assignments(args.cap, "--cap").items()}
        rows = sample_pack(args.pack, args.per_source, args.per_image_source, caps, args.seed)
    except ValueError as exc:
        p.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
