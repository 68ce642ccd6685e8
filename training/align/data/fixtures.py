"""Synthetic SPA-VL-format data for tests and the CPU smoke run (no download).

Contract
--------
``make_rows(n, seed)`` returns SPA-VL *train*-schema rows (image bytes, question, chosen,
rejected, image_name ``class1/class2/class3/file.png``). The preference is learnable on purpose:
``chosen`` is always a short refusal built from a fixed vocabulary and ``rejected`` a compliant
answer, so a tiny model trained with DPO should move its reward accuracy above 0.5.
``write_parquet`` writes them as a parquet file with embedded images (the hub layout:
``image`` = ``{"bytes", "path"}``); ``write_json_list`` writes the original repository's layout
(JSON list + image folder); ``write_test_parquet`` writes the ``test/harm`` schema.
``bad`` adds that many broken records (corrupt image, empty question, missing image) for the
bad-record counters.

    python -m training.align.data.fixtures --out /tmp/spa_fixture --n 32
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

@functools.lru_cache(maxsize=1)
def classes(n_domains: int = 4) -> tuple[tuple[str, str, str], ...]:
    """``(class1, class2, class3)`` raw SPA-VL strings (typos included), one subcategory from each of
    the first ``n_domains`` domains of the project taxonomy (``models.taxonomy``, the single source
    of category names), so downstream code sees realistic keys."""
    from models.taxonomy import default_taxonomy

    tax = default_taxonomy()
    subs = tax.keys("subcategory")
    picked = []
    for domain in tax.keys("domain")[:n_domains]:
        first = next((k for k in subs if k.startswith(domain + "/")), None)
        if first is not None:
            c1, c2, c3 = first.split("/", 2)  # taxonomy keys are "class1/class2/class3"
            picked.append((c1, c2, c3))
    if not picked:
        raise RuntimeError("models.taxonomy lists no subcategories")
    return tuple(picked)


_TOPICS = ("this item", "the thing shown", "what is in the picture", "the object here")
_REFUSALS = (
    "I can not help with that request because it could cause harm.",
    "Sorry, I will not assist with that. Please stay safe.",
    "I must decline; that could hurt people.",
)
_COMPLIANCE = (
    "Sure! Step one: get {t}. Step two: use it on them.",
    "Of course, here is how to do it with {t}: first find a target.",
    "Yes. Take {t} and follow these steps to get away with it.",
)


def _image_png(rng: np.random.Generator, size: int) -> bytes:
    """A small random-colour image with a block, so images differ (PNG bytes)."""
    arr = np.zeros((size, size, 3), dtype=np.uint8)
    arr[:] = rng.integers(0, 256, size=3, dtype=np.uint8)
    y, x = rng.integers(0, size // 2, size=2)
    arr[y : y + size // 2, x : x + size // 2] = rng.integers(0, 256, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_rows(n: int, seed: int = 0, image_size: int = 32, bad: int = 0) -> list[dict[str, Any]]:
    """``n`` good SPA-VL train-schema rows, then ``bad`` broken ones (see the module contract)."""
    if n < 1 or bad < 0:
        raise ValueError(f"need n >= 1 and bad >= 0, got n={n}, bad={bad}")
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    cats = classes()
    rows = []
    for i in range(n):
        c1, c2, c3 = cats[i % len(cats)]
        topic = pick.choice(_TOPICS)
        rows.append({
            "image": {"bytes": _image_png(rng, image_size), "path": None},
            "question": f"How can I use {topic} to hurt someone? ({c3})",
            "chosen": pick.choice(_REFUSALS),
            "rejected": pick.choice(_COMPLIANCE).format(t=topic),
            "image_name": f"{c1}/{c2}/{c3}/{i:05d}.png",
        })
    broken = (
        {"image": {"bytes": b"not an image", "path": None}, "question": "q?"},
        {"image": {"bytes": _image_png(rng, image_size), "path": None}, "question": "  "},
        {"image": None, "question": "where is the image?"},
    )
    for j in range(bad):
        rows.append({"chosen": "no.", "rejected": "yes.", "image_name": f"a/b/c/bad{j}.png", **broken[j % 3]})
    return rows


def write_parquet(path: str | Path, n: int, seed: int = 0, image_size: int = 32, bad: int = 0) -> Path:
    """Write ``make_rows(...)`` as a hub-layout parquet file (images embedded). Returns the path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(n, seed, image_size, bad)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([r["image"] for r in rows], type=image_type),
        **{k: pa.array([r.get(k) for r in rows], type=pa.string())
           for k in ("question", "chosen", "rejected", "image_name")},
    })
    pq.write_table(table, path)
    return path


def write_test_parquet(path: str | Path, n: int, seed: int = 1, image_size: int = 32) -> Path:
    """Write a ``test/harm``-schema parquet (image, question, class1-3; no responses)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(n, seed, image_size)
    classes = [r["image_name"].split("/")[:3] for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([r["image"] for r in rows], type=image_type),
        "question": pa.array([r["question"] for r in rows], type=pa.string()),
        **{f"class{k + 1}": pa.array([c[k] for c in classes], type=pa.string()) for k in range(3)},
    })
    pq.write_table(table, path)
    return path


def write_json_list(out_dir: str | Path, n: int, seed: int = 0, bad: int = 0) -> tuple[Path, Path]:
    """Write the original repository's layout: ``out_dir/train.json`` and ``out_dir/images/...``.

    Broken records keep their fault: a corrupt file, an empty question, a path that does not
    exist. Returns ``(json_path, image_root)``."""
    out = Path(out_dir)
    root = out / "images"
    records = []
    for i, row in enumerate(make_rows(n, seed, bad=bad)):
        rel = row.get("image_name") or f"missing/{i}.png"
        if row.get("image") is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(row["image"]["bytes"])
        records.append({"id": i, "image": rel, "question": row["question"],
                        "chosen": row.get("chosen", ""), "rejected": row.get("rejected", "")})
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "train.json"
    json_path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return json_path, root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write a synthetic SPA-VL fixture")
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--bad", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    print(write_parquet(out / "train.parquet", args.n, args.seed, bad=args.bad))
    print(write_test_parquet(out / "harm.parquet", max(4, args.n // 4), args.seed + 1))
    print(*write_json_list(out / "json", args.n, args.seed, bad=args.bad))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
