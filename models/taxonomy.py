"""SPA-VL harm taxonomy: the one source of truth for category names (STYLE.md section 10).

Contract
--------
* The tree (6 domains -> 15 categories -> subcategories) lives in ``taxonomy_spa_vl.json`` beside
  this file. Node keys are ``/``-joined paths of SPA-VL's *raw* strings, typos included
  (``"Representation & ToxicityHarms/Unfair/disablity discrimination"``), so they equal the
  dataset's ``class1/class2/class3`` values and image-path prefixes. ``display`` names are the
  normalised form for humans only.
* Subcategory names are never invented: the data file lists the leaves whose raw strings were
  verified; ``Taxonomy.extend_from_rows`` / ``Taxonomy.from_rows`` add the others from data rows
  (``class1``/``class2``/``class3`` columns, or an ``image`` path ``c1/c2/c3/name``).
* Rows resolve to nodes case-, space- and punctuation-insensitively (``resolve``), so a category
  whose raw string is not yet verified still matches the dataset's spelling.
* ``version`` fingerprints the file version and the ordered node keys; an artifact's card stores
  the version of the node keys it was trained on (``node_keys_version``).
* Projections to OpenAI moderation's 13 categories and MLCommons hazards S1-S14 are data in the same
  file; ``project(scores, "openai")`` maps node scores to target scores (max over mapped nodes).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).with_name("taxonomy_spa_vl.json")
LEVELS = ("domain", "category", "subcategory")
TARGETS = ("openai", "mlcommons")


@dataclass(frozen=True)
class Node:
    """One taxonomy node. ``source`` is ``"file"`` (the data file) or ``"data"`` (added from rows)."""

    key: str
    raw: str
    display: str
    level: str
    parent: str | None
    verified: bool
    source: str = "file"


def _norm(text: str) -> str:
    """Matching form of a raw string: lower case, letters and digits only."""
    return re.sub(r"[^0-9a-z]", "", text.casefold())


def node_keys_version(keys: Iterable[str], file_version: str = "1") -> str:
    """Fingerprint of an ordered list of node keys (what a node head was trained on)."""
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:12]
    return f"spa-vl.{file_version}.{digest}"


class Taxonomy:
    """An immutable harm tree with projections. Build with ``load()`` or ``default_taxonomy()``."""

    def __init__(self, nodes: list[Node], targets: dict[str, Any],
                 projections: dict[str, dict[str, list[str]]], file_version: str) -> None:
        self.nodes: dict[str, Node] = {}
        for node in nodes:
            if node.key in self.nodes:
                raise ValueError(f"duplicate taxonomy node key {node.key!r}")
            if node.parent is not None and node.parent not in self.nodes:
                raise ValueError(f"node {node.key!r} has unknown parent {node.parent!r}")
            self.nodes[node.key] = node
        self.targets = targets
        self.projections = projections
        self.file_version = file_version
        self._check_projections()
        self._by_norm = {self._norm_key(k): k for k in self.nodes}

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path = DATA_FILE) -> Taxonomy:
        """Read a taxonomy data file (see ``taxonomy_spa_vl.json`` for the schema)."""
        data = json.loads(Path(path).read_text())
        nodes: list[Node] = []
        for dom in data["domains"]:
            dkey = dom["raw"]
            nodes.append(Node(dkey, dom["raw"], dom["display"], "domain", None, dom["verified"]))
            for cat in dom["categories"]:
                ckey = f"{dkey}/{cat['raw']}"
                nodes.append(Node(ckey, cat["raw"], cat["display"], "category", dkey, cat["verified"]))
                for sub in cat["subcategories"]:
                    skey = f"{ckey}/{sub['raw']}"
                    nodes.append(Node(skey, sub["raw"], sub["display"], "subcategory", ckey, True))
        return cls(nodes, data["targets"], data["projections"], str(data["file_version"]))

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], base: Taxonomy | None = None) -> Taxonomy:
        """``base`` (default: the shipped tree) extended with the unknown nodes found in ``rows``."""
        return (base or default_taxonomy()).extend_from_rows(rows)

    def extend_from_rows(self, rows: Iterable[Mapping[str, Any]]) -> Taxonomy:
        """A new taxonomy with every (class1, class2, class3) of ``rows`` that is not yet a node.

        A row gives its classes as ``class1``/``class2``/``class3`` keys, or as the first three parts
        of an ``image`` path. Rows without class information are skipped; a row with a class3 but
        no class1/class2 is an error.
        """
        nodes = list(self.nodes.values())
        known = dict(self._by_norm)
        for row in rows:
            parts = _row_classes(row)
            parent: str | None = None
            for level, raw in zip(LEVELS, parts):
                norm = self._norm_key(f"{parent}/{raw}" if parent else raw)
                key = known.get(norm)
                if key is None:
                    key = f"{parent}/{raw}" if parent else raw
                    nodes.append(Node(key, raw, _display(raw), level, parent, True, "data"))
                    known[norm] = key
                parent = key
        return Taxonomy(nodes, self.targets, self.projections, self.file_version)

    # ---- queries --------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Fingerprint of this tree's ordered node keys."""
        return node_keys_version(self.nodes, self.file_version)

    def keys(self, level: str | None = None) -> list[str]:
        """All node keys in file order (domains, their categories, their subcategories, ...)."""
        if level is not None and level not in LEVELS:
            raise ValueError(f"unknown level {level!r}; expected one of {LEVELS}")
        return [k for k, n in self.nodes.items() if level is None or n.level == level]

    def children(self, key: str) -> list[str]:
        """Direct children of ``key``."""
        self._require(key)
        return [k for k, n in self.nodes.items() if n.parent == key]

    def ancestors(self, key: str) -> list[str]:
        """``key``'s parent, grandparent, ... (nearest first)."""
        out, node = [], self._require(key)
        while node.parent is not None:
            out.append(node.parent)
            node = self.nodes[node.parent]
        return out

    def resolve(self, class1: str, class2: str | None = None, class3: str | None = None) -> str | None:
        """The deepest known node key for raw class strings, or None when class1 is unknown."""
        parts = [p for p in (class1, class2, class3) if p]
        found: str | None = None
        for i in range(1, len(parts) + 1):
            key = self._by_norm.get(self._norm_key("/".join(parts[:i])))
            if key is None:
                break
            found = key
        return found

    def labels_for(self, class1: str, class2: str | None = None, class3: str | None = None) -> list[str]:
        """Multi-label targets for a row: the resolved node and all its ancestors."""
        key = self.resolve(class1, class2, class3)
        return [] if key is None else [key, *self.ancestors(key)]

    def display(self, key: str) -> str:
        """Human-readable ``Domain > Category > Subcategory`` for a node key."""
        chain = [key, *self.ancestors(key)][::-1]
        return " > ".join(self.nodes[k].display for k in chain)

    def project(self, scores: Mapping[str, float], target: str) -> dict[str, float]:
        """Scores of ``target``'s categories: the max score of the nodes that map to each (0 if none)."""
        if target not in TARGETS:
            raise ValueError(f"unknown projection target {target!r}; expected one of {TARGETS}")
        out = {name: 0.0 for name in self.target_names(target)}
        for key, names in self.projections[target].items():
            if key in scores:
                for name in names:
                    out[name] = max(out[name], float(scores[key]))
        return out

    def target_names(self, target: str) -> list[str]:
        """Category names of a projection target, in their published order."""
        names = self.targets[target]
        return list(names) if isinstance(names, list) else list(names.keys())

    # ---- internals ------------------------------------------------------------------------------
    def _require(self, key: str) -> Node:
        try:
            return self.nodes[key]
        except KeyError:
            raise KeyError(f"unknown taxonomy node {key!r}") from None

    def _norm_key(self, key: str) -> str:
        return "/".join(_norm(part) for part in key.split("/"))

    def _check_projections(self) -> None:
        for target in TARGETS:
            allowed = set(self.target_names(target))
            for key, names in self.projections.get(target, {}).items():
                if key not in self.nodes:
                    raise ValueError(f"{target} projection names unknown node {key!r}")
                bad = set(names) - allowed
                if bad:
                    raise ValueError(f"{target} projection of {key!r} names unknown targets {sorted(bad)}")


def _row_classes(row: Mapping[str, Any]) -> list[str]:
    parts = [row.get("class1"), row.get("class2"), row.get("class3")]
    if not any(parts) and isinstance(row.get("image"), str) and row["image"].count("/") >= 3:
        parts = row["image"].split("/")[:3]
    parts = [str(p).strip() if p else "" for p in parts]
    if not parts[0] and any(parts):
        raise ValueError(f"row has class2/class3 but no class1: {parts}")
    if parts[2] and not parts[1]:
        raise ValueError(f"row has class3 but no class2: {parts}")
    return [p for p in parts if p]


def _display(raw: str) -> str:
    """Display form of a raw string from data: split glued words ("ToxicityHarms"), capitalise."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", raw.strip())
    return spaced[:1].upper() + spaced[1:]


@lru_cache(maxsize=1)
def default_taxonomy() -> Taxonomy:
    """The shipped SPA-VL tree (cached; ``Taxonomy`` is immutable)."""
    return Taxonomy.load()


def default_node_keys() -> list[str]:
    """Node keys a classifier predicts by default: every node of the shipped tree."""
    return default_taxonomy().keys()
