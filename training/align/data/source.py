"""Where the preference data of a training job comes from: one config dataclass, one loader.

Contract
--------
``SpaVLDataArgs`` is parsed by ``TrlParser`` next to the trainer's config (every field is a YAML
key). ``load_preference_splits(args)`` returns ``(train, eval_or_None, report)`` in TRL's
vision-preference format (see ``training.align.data.spa_vl``); ``report`` holds the kept/skipped counts
of each split. Sources: ``hub`` (``sqrti/SPA-VL``, optional streaming), ``parquet`` (local files
of the hub schema) and ``json_list`` (the original repository's JSON list + image folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.align.data import spa_vl

SOURCES = ("hub", "parquet", "json_list")


@dataclass
class SpaVLDataArgs:
    """Data source of a DPO / reward-model job."""

    dataset_source: str = field(default="hub", metadata={"help": f"One of {SOURCES}."})
    dataset_name: str = field(default=spa_vl.HUB_ID, metadata={"help": "Hub dataset id (source=hub)."})
    dataset_config: str = field(default="default", metadata={"help": "Hub config of the train split."})
    dataset_train_split: str = field(default="train", metadata={"help": "Hub split used for training."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision (commit) to pin."})
    eval_dataset_config: str | None = field(
        default="validation", metadata={"help": "Hub config of the eval split; null for no eval (source=hub)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Hub split used for evaluation."})
    streaming: bool = field(
        default=False, metadata={"help": "Stream the train split (hub only; needs max_steps in the trainer)."}
    )
    data_files: list[str] | None = field(default=None, metadata={"help": "Train parquet files (source=parquet)."})
    eval_data_files: list[str] | None = field(default=None, metadata={"help": "Eval parquet files (parquet)."})
    json_list: str | None = field(default=None, metadata={"help": "JSON list file (source=json_list)."})
    image_root: str | None = field(default=None, metadata={"help": "Image folder of the JSON list."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many train pairs."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep at most this many eval pairs."})

    def __post_init__(self) -> None:
        # A CLI override cannot write YAML's null: accept "null"/"none" for the optional fields.
        for name in ("dataset_revision", "eval_dataset_config", "json_list", "image_root"):
            if str(getattr(self, name)).lower() in ("null", "none", ""):
                setattr(self, name, None)
        for name in ("data_files", "eval_data_files"):
            value = getattr(self, name)
            if value is not None and [str(v).lower() for v in value] in (["null"], ["none"], []):
                setattr(self, name, None)
        if self.dataset_source not in SOURCES:
            raise ValueError(f"dataset_source must be one of {SOURCES}, got {self.dataset_source!r}")
        if self.dataset_source == "parquet" and not self.data_files:
            raise ValueError("dataset_source=parquet needs data_files: [path.parquet, ...]")
        if self.dataset_source == "json_list" and not (self.json_list and self.image_root):
            raise ValueError("dataset_source=json_list needs json_list and image_root")
        if self.streaming and self.dataset_source != "hub":
            raise ValueError("streaming is only for dataset_source=hub; local files load lazily already")
        if self.dataset_source == "hub" and self.dataset_train_split not in spa_vl.HUB_SPLITS.get(
            self.dataset_config, ()
        ):
            raise ValueError(
                f"SPA-VL has no split {self.dataset_train_split!r} in config {self.dataset_config!r}; "
                f"valid: {spa_vl.HUB_SPLITS}"
            )


def _hub(args: SpaVLDataArgs, config: str, split: str, streaming: bool):
    # NOTE: spa_vl.hub_rows pins the repo id; a mirror under another name goes through parquet.
    if args.dataset_name != spa_vl.HUB_ID:
        from datasets import Image as ImageFeature
        from datasets import load_dataset

        ds = load_dataset(args.dataset_name, config, split=split, streaming=streaming, revision=args.dataset_revision)
        return ds.cast_column("image", ImageFeature(decode=False))
    return spa_vl.hub_rows(config, split, streaming=streaming, revision=args.dataset_revision)


# Bump when the conversion's output changes, so stale caches are not reused.
CONVERSION_VERSION = 2


def source_fingerprint(args: SpaVLDataArgs, role: str) -> str:
    """A stable hash of what a split's conversion depends on (source, files' size and mtime, split,
    limit, conversion version): equal inputs reuse the cached conversion."""
    import hashlib
    import json

    files = []
    if args.dataset_source == "parquet":
        files = args.data_files if role == "train" else (args.eval_data_files or [])
    elif args.dataset_source == "json_list":
        files = [args.json_list]
    stamps = [(str(Path(f).resolve()), Path(f).stat().st_size, Path(f).stat().st_mtime_ns) for f in files]
    key = {"v": CONVERSION_VERSION, "role": role, "files": stamps, "image_root": args.image_root,
           "hub": [args.dataset_name, args.dataset_revision, args.dataset_config, args.dataset_train_split,
                   args.eval_dataset_config, args.eval_split] if args.dataset_source == "hub" else None,
           "limit": args.max_train_samples if role == "train" else args.max_eval_samples}
    return "spavl-" + hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def load_preference_splits(args: SpaVLDataArgs) -> tuple[Any, Any | None, dict[str, Any]]:
    """``(train, eval or None, report)`` in TRL vision-preference format (module contract).

    Non-streaming splits are converted once into the datasets cache (see ``spa_vl.convert``);
    under ``accelerate launch`` the main process converts first and the other ranks reuse it."""
    from accelerate import PartialState

    with PartialState().main_process_first():
        return _load(args)


def _load(args: SpaVLDataArgs) -> tuple[Any, Any | None, dict[str, Any]]:
    report: dict[str, Any] = {}
    root = Path(args.image_root) if args.image_root else None
    train_stats = spa_vl.ConversionStats()
    if args.dataset_source == "hub" and args.streaming:
        rows = _hub(args, args.dataset_config, args.dataset_train_split, streaming=True)
        train = spa_vl.convert_streaming(rows, stats=train_stats)
        if args.max_train_samples is not None:
            train = train.take(args.max_train_samples)
        report["train"] = train_stats  # grows while streaming; read it after training
    else:
        if args.dataset_source == "hub":
            rows = _hub(args, args.dataset_config, args.dataset_train_split, streaming=False)
        elif args.dataset_source == "parquet":
            rows = spa_vl.parquet_rows(args.data_files)
        else:
            rows = spa_vl.json_list_rows(args.json_list, root)
        train = spa_vl.convert(rows, image_root=root, stats=train_stats, limit=args.max_train_samples,
                               fingerprint=source_fingerprint(args, "train"))
        report["train"] = train_stats
    eval_rows = None
    if args.dataset_source == "hub" and args.eval_dataset_config:
        eval_rows = _hub(args, args.eval_dataset_config, args.eval_split, streaming=False)
    elif args.dataset_source == "parquet" and args.eval_data_files:
        eval_rows = spa_vl.parquet_rows(args.eval_data_files)
    eval_ds = None
    if eval_rows is not None:
        eval_stats = spa_vl.ConversionStats()
        eval_ds = spa_vl.convert(eval_rows, stats=eval_stats, limit=args.max_eval_samples,
                                 fingerprint=source_fingerprint(args, "eval"))
        report["eval"] = eval_stats
    return train, eval_ds, report
