"""training.guard.heldout_groups: per-group confusion counts and pooled metrics without chosen groups."""

from __future__ import annotations

import numpy as np

from training.guard.heldout_groups import group_counts, summarize


def test_group_counts_by_hand():
    groups = ["a", "a", "b", "b", "b"]
    labels = np.array([1, 0, 1, 1, 0])
    flagged = np.array([True, True, False, True, False])
    assert group_counts(groups, labels, flagged) == {
        "a": {"tp": 1, "fp": 1, "fn": 0, "tn": 0}, "b": {"tp": 1, "fp": 0, "fn": 1, "tn": 1}}


def test_summarize_drops_excluded_groups_from_the_second_pool():
    groups = ["keep", "keep", "keep", "keep", "swap", "swap"]
    labels = np.array([1, 1, 0, 0, 1, 1])
    probs = np.array([0.9, 0.2, 0.1, 0.8, 0.9, 0.95])
    r = summarize(groups, labels, probs, threshold=0.5, exclude=["swap"])
    assert r["all"]["n"] == 6 and r["without"]["n"] == 4
    assert (r["all"]["tp"], r["without"]["tp"]) == (3, 1)
    assert r["without"]["f1"] == 0.5  # tp 1, fp 1, fn 1
    assert r["groups"]["swap"] == {"tp": 2, "fp": 0, "fn": 0, "tn": 0}
