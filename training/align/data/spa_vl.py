"""SPA-VL → TRL vision-preference format, at the boundary (STYLE.md section 7).

Contract
--------
Sources (all give the same output):

* the hub: ``load_dataset("sqrti/SPA-VL", config, split=...)`` with configs ``default`` (split
  ``train``: image, question, chosen, rejected, image_name), ``validation`` (split ``validation``:
  image, question, chosen, rejected, class1-3) and ``test`` (splits ``harm``/``help``: image,
  question, class1-3, no responses). ``streaming=True`` for the 3.6 GB train split.
* local parquet files of the same schema (e.g. a hub snapshot, or ``fixtures.write_parquet``).
* the original repository's JSON lists ``[{id, image, question, chosen, rejected}, ...]`` with
  ``image`` a path relative to an image folder.

Output rows (``PREFERENCE_COLUMNS``): ``images`` (one image, decoded lazily by ``datasets``),
``prompt`` = ``[{"role": "user", "content": question}]``, ``chosen`` / ``rejected`` =
``[{"role": "assistant", "content": text}]``, plus ``id``, ``class1``, ``class2``, ``class3``.
Train class labels come from ``image_name`` = ``class1/class2/class3/file``. TRL's
``DataCollatorForVisionPreference`` inserts the image placeholder into the user turn.

Bad records (missing or undecodable image, empty text) are skipped and counted in a
``ConversionStats``; a long run never dies on one record. Run ``python -m training.align.data.spa_vl
--parquet FILE`` to print the counts for a file.
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

HUB_ID = "sqrti/SPA-VL"
# (config, split) pairs that exist on the hub; anything else is a typo.
HUB_SPLITS: dict[str, tuple[str, ...]] = {
    "default": ("train",),
    "validation": ("validation",),
    "test": ("harm", "help"),
}
PREFERENCE_COLUMNS = ("id", "images", "prompt", "chosen", "rejected", "class1", "class2", "class3")
PROMPT_COLUMNS = ("id", "images", "prompt", "question", "class1", "class2", "class3")
UNKNOWN_CLASS = "unknown"


@dataclass
class ConversionStats:
    """What happened to each input record: kept, or skipped with a reason."""

    seen: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)

    def record(self, reason: str | None) -> bool:
        """Count one record; return True when it is kept (``reason`` is None or empty)."""
        self.seen += 1
        if reason:
            self.skipped[reason] += 1
            return False
        self.kept += 1
        return True

    def as_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "skipped": dict(self.skipped)}


def parse_image_name(image_name: str) -> tuple[str, str, str]:
    """``".../class1/class2/class3/file.jpg"`` → ``(class1, class2, class3)``.

    Shorter paths fill the missing levels with ``"unknown"`` rather than failing: the label is
    metadata, never needed for training."""
    dirs = [p for p in str(image_name).replace("\\", "/").split("/") if p][:-1]
    # The three folders right above the file (a leading "images/" or absolute prefix is ignored).
    parts = dirs[-3:] if len(dirs) >= 3 else dirs + [UNKNOWN_CLASS] * (3 - len(dirs))
    return parts[0], parts[1], parts[2]


def _image_bytes(image: Any, image_root: Path | None) -> bytes | None:
    """The encoded bytes of an undecoded ``datasets`` image (``{"bytes", "path"}``), a path or bytes."""
    if image is None:
        return None
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(image, dict):
        if image.get("bytes"):
            return image["bytes"]
        image = image.get("path")
        if not image:
            return None
    path = Path(image)
    if image_root is not None and not path.is_absolute():
        path = image_root / path
    return path.read_bytes() if path.is_file() else None


def check_record(row: dict[str, Any], needs_responses: bool, image_root: Path | None = None) -> str | None:
    """Why ``row`` must be skipped (``"missing_image"``, ``"bad_image"``, ``"empty_question"``,
    ``"empty_chosen"``, ``"empty_rejected"``, ``"same_responses"``), or None when it is usable."""
    if not str(row.get("question") or "").strip():
        return "empty_question"
    if needs_responses:
        for key in ("chosen", "rejected"):
            if not str(row.get(key) or "").strip():
                return f"empty_{key}"
        if row["chosen"].strip() == row["rejected"].strip():
            return "same_responses"  # no preference signal
    data = _image_bytes(row.get("image"), image_root)
    if data is None:
        return "missing_image"
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # header + structure; cheap, no full decode
    except Exception:  # noqa: BLE001 - PIL raises many types for corrupt files
        return "bad_image"
    return None


def _classes(row: dict[str, Any]) -> tuple[str, str, str]:
    if row.get("class1"):
        return (str(row["class1"]), str(row.get("class2") or UNKNOWN_CLASS), str(row.get("class3") or UNKNOWN_CLASS))
    if row.get("image_name"):
        return parse_image_name(row["image_name"])
    return UNKNOWN_CLASS, UNKNOWN_CLASS, UNKNOWN_CLASS


def to_preference(row: dict[str, Any], index: int, image_root: Path | None = None) -> dict[str, Any]:
    """One checked SPA-VL row → one TRL vision-preference row (see the module contract)."""
    c1, c2, c3 = _classes(row)
    return {
        "id": str(row.get("id") if row.get("id") is not None else index),
        "images": [{"bytes": _image_bytes(row["image"], image_root), "path": None}],
        "prompt": [{"role": "user", "content": row["question"].strip()}],
        "chosen": [{"role": "assistant", "content": row["chosen"].strip()}],
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
        "class1": c1,
        "class2": c2,
        "class3": c3,
    }


def to_prompt(row: dict[str, Any], index: int, image_root: Path | None = None) -> dict[str, Any]:
    """One checked SPA-VL test row → a prompt-only row for generation (``eval_harm``)."""
    c1, c2, c3 = _classes(row)
    question = row["question"].strip()
    return {
        "id": str(row.get("id") if row.get("id") is not None else index),
        "images": [{"bytes": _image_bytes(row["image"], image_root), "path": None}],
        "prompt": [{"role": "user", "content": question}],
        "question": question,
        "class1": c1,
        "class2": c2,
        "class3": c3,
    }


def _features(prompt_only: bool):  # -> datasets.Features
    from datasets import Features, List, Value
    from datasets import Image as ImageFeature

    turn = List({"role": Value("string"), "content": Value("string")})
    cols: dict[str, Any] = {"id": Value("string"), "images": List(ImageFeature()), "prompt": turn}
    if prompt_only:
        cols["question"] = Value("string")
    else:
        cols["chosen"] = turn
        cols["rejected"] = turn
    cols.update({k: Value("string") for k in ("class1", "class2", "class3")})
    return Features(cols)


def convert(rows: Iterable[dict[str, Any]], *, prompt_only: bool = False, image_root: Path | None = None,
            stats: ConversionStats | None = None, limit: int | None = None, fingerprint: str | None = None,
            cache_dir: str | None = None):
    """Check and convert ``rows`` into a ``datasets.Dataset`` (images stay encoded).

    ``stats`` (created when None) receives the kept/skipped counts. Without ``fingerprint`` the
    result lives in memory (tests, small sets). With one (a hash of the source, see
    ``training.align.data.source``) it is written once to the datasets cache as memory-mapped Arrow and
    reused by later calls with the same fingerprint (e.g. the other ranks of a multi-GPU job),
    counts included (a JSON file beside the cache)."""
    from datasets import Dataset

    stats = stats if stats is not None else ConversionStats()
    to_row = to_prompt if prompt_only else to_preference
    if fingerprint is not None:
        return _convert_cached(rows, to_row, prompt_only, image_root, stats, limit, fingerprint, cache_dir)
    out: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if limit is not None and len(out) >= limit:
            break
        if stats.record(check_record(row, not prompt_only, image_root)):
            out.append(to_row(row, i, image_root))
    if not out:
        raise ValueError(f"no usable SPA-VL records: {stats.as_dict()}")
    return Dataset.from_list(out, features=_features(prompt_only))


def _convert_cached(rows, to_row, prompt_only: bool, image_root: Path | None, stats: ConversionStats,
                    limit: int | None, fingerprint: str, cache_dir: str | None):
    from datasets import Dataset
    from datasets import config as ds_config

    report = Path(cache_dir or ds_config.HF_DATASETS_CACHE) / "spaguard_conversion" / f"{fingerprint}.json"
    fresh = ConversionStats()

    def generate():
        kept = 0
        for i, row in enumerate(rows):
            if limit is not None and kept >= limit:
                break
            if fresh.record(check_record(row, not prompt_only, image_root)):
                kept += 1
                yield to_row(row, i, image_root)

    try:
        ds = Dataset.from_generator(generate, features=_features(prompt_only), fingerprint=fingerprint,
                                    cache_dir=cache_dir)
    except Exception as exc:  # noqa: BLE001 - datasets fails obscurely on an empty generator
        if fresh.seen and not fresh.kept:
            raise ValueError(f"no usable SPA-VL records: {fresh.as_dict()}") from exc
        raise
    if fresh.seen:  # this process converted: keep the counts next to the cache
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(fresh.as_dict()), encoding="utf-8")
    elif report.is_file():  # cache hit: the converting process left the counts
        saved = json.loads(report.read_text(encoding="utf-8"))
        fresh = ConversionStats(saved["seen"], saved["kept"], Counter(saved["skipped"]))
    else:  # cache hit without a report (converter died after writing): the kept count is all we know
        fresh = ConversionStats(len(ds), len(ds), Counter({"unknown_from_cache": 0}))
    stats.seen, stats.kept = stats.seen + fresh.seen, stats.kept + fresh.kept
    stats.skipped.update(fresh.skipped)
    return ds


def convert_streaming(rows, *, image_root: Path | None = None, stats: ConversionStats | None = None):
    """Lazy version of ``convert`` for a streaming ``datasets.IterableDataset`` (the hub train split).

    The counts in ``stats`` grow as the trainer consumes the stream."""
    stats = stats if stats is not None else ConversionStats()
    kept = rows.filter(lambda row: stats.record(check_record(row, True, image_root)))
    indexed = kept.map(lambda row, i: to_preference(row, i, image_root), with_indices=True,
                       remove_columns=list(rows.column_names or []))
    return indexed.cast(_features(False))


def hub_rows(config: str, split: str, *, streaming: bool = False, revision: str | None = None,
             cache_dir: str | None = None):
    """Rows of ``sqrti/SPA-VL`` with images left encoded (decoding happens in ``check_record``)."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    if split not in HUB_SPLITS.get(config, ()):
        raise ValueError(f"SPA-VL has no split {split!r} in config {config!r}; valid: {HUB_SPLITS}")
    ds = load_dataset(HUB_ID, config, split=split, streaming=streaming, revision=revision, cache_dir=cache_dir)
    return ds.cast_column("image", ImageFeature(decode=False))


def parquet_rows(paths: list[str] | str):
    """Rows of local SPA-VL parquet files (any of the hub schemas), images left encoded."""
    from datasets import Image as ImageFeature
    from datasets import load_dataset

    files = [paths] if isinstance(paths, str) else list(paths)
    missing = [p for p in files if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"SPA-VL parquet not found: {missing}")
    ds = load_dataset("parquet", data_files=files, split="train")
    return ds.cast_column("image", ImageFeature(decode=False))


def json_list_rows(json_path: str | Path, image_root: str | Path) -> list[dict[str, Any]]:
    """Rows of the original repository's JSON list ``[{id, image, question, chosen, rejected}]``.

    ``image`` is relative to ``image_root`` and doubles as ``image_name`` (class labels)."""
    data = json.loads(Path(json_path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{json_path}: expected a JSON list of records, got {type(data).__name__}")
    root = Path(image_root)
    rows = []
    for rec in data:
        if not isinstance(rec, dict):
            rows.append({"question": ""})  # counted as a bad record downstream
            continue
        image = rec.get("image")
        rows.append({**rec, "image_name": image, "image": str(root / image) if image else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the conversion counts of a parquet file or a JSON list (a dry run of a data source)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parquet", nargs="*", default=None)
    parser.add_argument("--json-list", default=None)
    parser.add_argument("--image-root", default=".")
    parser.add_argument("--prompt-only", action="store_true")
    args = parser.parse_args(argv)
    if bool(args.parquet) == bool(args.json_list):
        parser.error("give exactly one of --parquet or --json-list")
    rows = parquet_rows(args.parquet) if args.parquet else json_list_rows(args.json_list, args.image_root)
    stats = ConversionStats()
    ds = convert(rows, prompt_only=args.prompt_only, stats=stats)
    print(json.dumps({"rows": len(ds), **stats.as_dict()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
