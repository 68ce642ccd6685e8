"""Several data packs in one recipe: where each file lives, which rows train, how each source weighs.

Contract
--------
* A ``guard_files`` entry is ``pattern`` (relative to ``DistillConfig.data_root``, the dev pack by default)
  or ``pack:pattern``, relative to the named pack's root. ``pack_root(name, data_roots, shared)``: the root
  given in ``data_roots`` as ``name=path`` (a relative path resolves against the repo root), else
  ``<shared>/data/<name>`` where ``<shared>`` is ``$SPAGUARD_SHARED_DIR`` or ``<repo>/../shared``. A named
  pack's image paths resolve against its root (the packs' MANIFEST: "images are paths relative to this
  folder"); an unprefixed file keeps the old rule (its own folder).
* ``parse_assignments(entries, kind)``: ``["name=value", ...]`` → ``{name: value}``; a malformed entry or a
  repeated name raises ``ValueError`` naming it.
* ``prepare_source_rows(examples, cfg)``: the per-source rules of the recipe, in this order:
  1. ``response_only_sources``: the prompt label is dropped (gptfuzz_labeled_responses repeats 100 questions
     6,553 times; the questions themselves train once, from gptfuzz_questions);
  2. rows with no label left (davidson's "offensive, not hate" nulls) are dropped: unknown never trains;
  3. ``question_grouped_sources``: ``extra["cv_group"] = "question:<normalised prompt>"``, so every answer to
     one question (and the question itself, in any source listed) lands on one side of every split;
  4. ``source_caps`` (``dataset=N``): a seeded sample of whole ``cv_group`` clusters, smallest first, until
     N rows (at least one cluster), so a big source cannot swamp the mix and a cap never splits a cluster;
  5. ``source_weights`` (``dataset=w``): ``extra["label_weight"] = w``; ``training.guard.heads`` multiplies
     the item's group-balance weight by it (set-level "by design" labels below per-item human labels).
  Returns the kept rows and ``{dataset: {"rows", "kept", "dropped_unlabelled", "weight"}}`` for the card.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.guard.guard_data import GuardExample, default_shared_dir

_PACK = re.compile(r"^([A-Za-z0-9_.-]+):(?!/)(.+)$")


def parse_assignments(entries: Sequence[str], kind: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` → ``{"a": "1", "b": "2"}``; ``kind`` names the config field in errors."""
    out: dict[str, str] = {}
    for entry in entries:
        name, sep, value = str(entry).partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise ValueError(f"{kind}: expected 'name=value', got {entry!r}")
        if name in out:
            raise ValueError(f"{kind}: {name!r} is given twice")
        out[name] = value
    return out


def split_pack(entry: str) -> tuple[str | None, str]:
    """``"dev2:index/x.jsonl"`` → ``("dev2", "index/x.jsonl")``; ``"index/x.jsonl"`` → ``(None, ...)``."""
    m = _PACK.match(entry)
    return (m.group(1), m.group(2)) if m else (None, entry)


def pack_root(name: str, data_roots: Sequence[str], repo_root: Path) -> Path:
    """The folder of pack ``name``: ``data_roots``' ``name=path`` or ``<shared>/data/<name>``."""
    given = parse_assignments(data_roots, "data_roots")
    if name in given:
        path = Path(given[name])
        return path if path.is_absolute() else repo_root / path
    return default_shared_dir(repo_root) / "data" / name


def _float(value: str, kind: str, name: str) -> float:
    try:
        out = float(value)
    except ValueError:
        raise ValueError(f"{kind}: {name}={value!r} is not a number") from None
    if not out >= 0:
        raise ValueError(f"{kind}: {name}={value!r} must be ≥ 0")
    return out


def question_key(prompt: str) -> str:
    """The near-copy cluster of an answer to a question: the question, case and spacing folded."""
    return "question:" + " ".join(prompt.lower().split())


def _cap(rows: list[GuardExample], cap: int, rng: random.Random) -> list[GuardExample]:
    """A seeded sample of whole clusters, about ``cap`` rows, in the rows' own order."""
    clusters: dict[str, list[int]] = {}
    for i, ex in enumerate(rows):
        clusters.setdefault(ex.cv_group, []).append(i)
    keys = sorted(clusters)
    rng.shuffle(keys)
    keep: list[int] = []
    for key in keys:
        if keep and len(keep) + len(clusters[key]) > cap:
            continue  # NOTE: a smaller cluster may still fit; never split one
        keep += clusters[key]
        if len(keep) >= cap:
            break
    return [rows[i] for i in sorted(keep)]


def prepare_source_rows(examples: Sequence[GuardExample], cfg: Any) -> tuple[list[GuardExample], dict[str, Any]]:
    """The recipe's per-source rules (module docstring, steps 1-5), applied per dataset in load order."""
    caps = {k: int(_float(v, "source_caps", k)) for k, v in
            parse_assignments(cfg.source_caps, "source_caps").items()}
    weights = {k: _float(v, "source_weights", k) for k, v in
               parse_assignments(cfg.source_weights, "source_weights").items()}
    response_only, by_question = set(cfg.response_only_sources), set(cfg.question_grouped_sources)
    by_source: dict[str, list[GuardExample]] = {}
    for ex in examples:
        by_source.setdefault(ex.group, []).append(ex)
    out: list[GuardExample] = []
    report: dict[str, Any] = {}
    for source, rows in by_source.items():
        n_rows = len(rows)
        if source in response_only:
            rows = [replace(ex, label_prompt=None, soft_prompt=None) for ex in rows]
        labelled = [ex for ex in rows if any(v is not None for v in
                                            (ex.label_prompt, ex.soft_prompt, ex.label_response, ex.soft_response))]
        dropped = len(rows) - len(labelled)
        if source in by_question:
            labelled = [replace(ex, extra={**ex.extra, "cv_group": question_key(ex.prompt)}) for ex in labelled]
        if source in caps and len(labelled) > caps[source]:
            labelled = _cap(labelled, caps[source], random.Random(f"{cfg.seed}:{source}"))
        w = weights.get(source, 1.0)
        if source in weights:
            labelled = [replace(ex, extra={**ex.extra, "label_weight": w}) for ex in labelled]
        report[source] = {"rows": n_rows, "kept": len(labelled), "dropped_unlabelled": dropped, "weight": w}
        out += labelled
    for name in (*caps, *weights, *response_only, *by_question):
        if name not in by_source:
            raise ValueError(f"source rule names {name!r}, which no loaded file provides")
    return out, report
