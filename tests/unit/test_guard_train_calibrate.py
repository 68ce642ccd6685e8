"""Calibration: temperature recovery and thresholds that meet a target false-positive rate."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.guard.calibrate import HeldOut, calibrate, fit_temperature, threshold_for_fpr


def test_threshold_meets_target_fpr_on_fixture():
    benign = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    t = threshold_for_fpr(benign, 0.2)  # 2 of 10 may be flagged: 0.8 and 0.9
    assert 0.7 < t <= 0.8 + 1e-12
    assert np.mean(np.asarray(benign) >= t) == pytest.approx(0.2)
    assert threshold_for_fpr(benign, 0.0) > 0.9  # flag no benign item
    assert threshold_for_fpr(benign, 0.05, floor=0.95) == 0.95


def test_threshold_with_ties_never_exceeds_target():
    benign = [0.5] * 5 + [0.1] * 5
    t = threshold_for_fpr(benign, 0.2)  # flagging any 0.5 would flag all five (50 %)
    assert np.mean(np.asarray(benign) >= t) <= 0.2


def test_fit_temperature_recovers_scale():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    labels = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(float)
    assert fit_temperature(true_logits * 3.0, labels) == pytest.approx(3.0, rel=0.08)


def test_calibrate_writes_contract_json(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array([0] * 50 + [1] * 50)
    logits = np.where(y == 1, 2.0, -2.0) + rng.normal(0, 1, 100)
    node_logits = rng.normal(-1, 1, (100, 2))
    cal = calibrate({"prompt": HeldOut(logits, y, y == 0), "response": HeldOut(logits, y, y == 0)},
                    target_fpr=0.1, node_keys=["a", "a/b"], node_logits=node_logits,
                    node_targets=np.zeros((100, 2)), node_mask=np.ones((100, 2)),
                    node_benign=y == 0)
    cal.write(tmp_path / "calibration.json")
    data = json.loads((tmp_path / "calibration.json").read_text())
    assert set(data) == {"temperature", "threshold", "node_temperature", "node_thresholds"}
    assert set(data["node_thresholds"]) == {"a", "a/b"}
    probs = cal.prob("prompt", logits)
    assert np.mean(probs[y == 0] >= data["threshold"]["prompt"]) <= 0.1


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="target_fpr"):
        threshold_for_fpr([0.1], 1.5)
    with pytest.raises(ValueError, match="non-empty"):
        fit_temperature([], [])
    with pytest.raises(ValueError, match="no benign"):
        calibrate({"prompt": HeldOut(np.ones(3), np.ones(3), np.zeros(3, bool))}, target_fpr=0.1)


def test_untaught_nodes_never_fire():
    rng = np.random.default_rng(2)
    y = np.array([0] * 2000 + [1] * 2000)
    z = rng.normal(0, 2, 4000)  # node "a": calibrated logits, targets drawn from them
    node_targets = np.zeros((4000, 2))
    node_targets[:, 0] = rng.random(4000) < 1 / (1 + np.exp(-z))
    node_logits = np.stack([z, rng.normal(-8, 1, 4000)], 1)  # node "b": never positive
    cal = calibrate({"prompt": HeldOut(np.where(y == 1, 2.0, -2.0), y, y == 0)}, target_fpr=0.1,
                    node_keys=["a", "b"], node_logits=node_logits, node_targets=node_targets,
                    node_mask=np.ones((4000, 2)), node_benign=y == 0, node_target_fpr=0.05)
    assert cal.node_thresholds["b"] == 1.0 and cal.node_thresholds["a"] < 1.0
    assert cal.node_temperature == pytest.approx(1.0, rel=0.15)  # "b" stays out of the fit
