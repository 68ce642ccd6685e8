"""Taxonomy node scores → another taxonomy's categories (OpenAI moderation, MLCommons hazards).

Contract
--------
* ``target_names(target)`` lists the target's category names in their published order (OpenAI
  moderation: 13 names such as ``"harassment/threatening"``).
* ``nodes_for_target(name, target)`` goes the other way: the nodes that map onto one target category (a judge
  model's MLCommons code → SPA-VL nodes).
* ``project_scores(scores, target)`` maps ``{node key: probability}`` (``Verdict.scores`` or the
  fired nodes ``Verdict.categories``) to ``{target name: score}`` for every target name: the max
  over the nodes that map to it, 0.0 when none does. Node keys the taxonomy does not project are
  ignored (a classifier may predict nodes without a counterpart, e.g. privacy).

The mapping is data in ``models/taxonomy_spa_vl.json`` (``models.taxonomy``); this module only
exposes it through ``models.backends`` so the service never imports ``models.taxonomy`` itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from models.taxonomy import TARGETS, default_taxonomy

__all__ = ["PROJECTION_TARGETS", "nodes_for_target", "project_scores", "target_names"]

PROJECTION_TARGETS = TARGETS


def target_names(target: str) -> list[str]:
    """Category names of ``target`` in published order; ValueError for an unknown target."""
    _check_target(target)
    return default_taxonomy().target_names(target)


def project_scores(scores: Mapping[str, float], target: str) -> dict[str, float]:
    """Scores of every ``target`` category (max over mapped nodes; 0.0 when none is mapped).

    Raises ValueError for an unknown target or a score that is not a finite number in [0, 1].
    """
    _check_target(target)
    for key, value in scores.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"score of {key!r} must be a probability in [0, 1], got {value!r}")
    return default_taxonomy().project(scores, target)


def nodes_for_target(name: str, target: str) -> list[str]:
    """The taxonomy nodes that project onto ``target``'s category ``name`` (e.g. MLCommons ``"S9"``), in the
    taxonomy's order; empty for a category nothing maps to. ValueError for an unknown target or name."""
    _check_target(target)
    if name not in target_names(target):
        raise ValueError(f"unknown {target} category {name!r}")
    return [key for key, names in default_taxonomy().projections[target].items() if name in names]


def _check_target(target: str) -> None:
    if target not in PROJECTION_TARGETS:
        raise ValueError(f"unknown projection target {target!r}; expected one of {PROJECTION_TARGETS}")
