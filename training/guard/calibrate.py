"""Calibration of the guard classifier: temperature scaling and false-positive-rate thresholds.

Contract
--------
* ``fit_temperature(logits, targets)``: the T > 0 minimising the binary cross-entropy of
  ``sigmoid(logits / T)`` against ``targets`` (hard 0/1 or soft in [0, 1]) on held-out data.
* ``threshold_for_fpr(benign_probs, target_fpr)``: the smallest threshold t such that the share of
  benign items with ``prob >= t`` is at most ``target_fpr`` (ties never push the rate over).
* ``calibrate(...)`` combines both per task (prompt, response) and for the node head, and returns the
  ``models.artifact.Calibration`` every backend reads, whose ``to_dict()`` is the ``calibration.json``
  ``{"temperature": {"prompt": T, "response": T}, "threshold": {"prompt": t, "response": t},
  "node_temperature": T, "node_thresholds": {node_key: t}}`` (``node_override`` is not fitted: unset).
  ``Verdict.unsafe_prob = sigmoid(logit, T[task])``; flagged when ``unsafe_prob >= threshold``.
* ``train_and_calibrate(model, data, train_idx, held_idx, cfg)``: the shipped head recipe (fit
  on ``train_idx`` with ``training.guard.heads.fit_heads``, calibrate on ``held_idx``); the final
  build and every cross-validation fold run exactly this.
* ``split_items(..., calib_sources)`` holds every item of ``cfg.calib_sources`` out of training, and
  ``threshold_benign`` sets the prompt threshold on their benign items alone (held-apart calibration).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.artifact import Calibration, sigmoid
from training.guard.heads import fit_heads, predict_heads

T_BOUNDS = (0.05, 20.0)  # NOTE: beyond these the head is broken, not mis-calibrated


def _bce(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    # log(1 + e^z) - t*z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - targets * z))


def fit_temperature(logits: Sequence[float], targets: Sequence[float]) -> float:
    """Temperature by bounded 1-D minimisation of the BCE over log T (deterministic)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64).ravel()
    t = np.asarray(targets, dtype=np.float64).ravel()
    if len(z) != len(t) or len(z) == 0:
        raise ValueError(f"fit_temperature needs equal, non-empty inputs (got {len(z)}, {len(t)})")
    if np.any((t < 0) | (t > 1)) or not np.all(np.isfinite(z)):
        raise ValueError("targets must lie in [0, 1] and logits must be finite")
    lo, hi = math.log(T_BOUNDS[0]), math.log(T_BOUNDS[1])
    res = minimize_scalar(lambda s: _bce(z, t, math.exp(s)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    return float(math.exp(res.x))


def threshold_for_fpr(benign_probs: Sequence[float], target_fpr: float, *, floor: float = 0.0) -> float:
    """Smallest t with mean(benign_probs >= t) <= target_fpr, never below ``floor``."""
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    neg = np.sort(np.asarray(benign_probs, dtype=np.float64))[::-1]  # descending
    if len(neg) == 0:
        raise ValueError("threshold_for_fpr needs at least one benign score")
    allowed = int(math.floor(target_fpr * len(neg) + 1e-9))  # benign items we may flag
    if allowed >= len(neg):
        return max(floor, float(neg[-1]))
    # Just above the (allowed+1)-th highest benign score: it and everything tied with it pass.
    t = float(np.nextafter(neg[allowed], np.inf))
    return float(min(1.0, max(floor, t)))


@dataclass
class HeldOut:
    """Held-out logits of one head with targets; ``benign`` marks items known to be safe."""

    logits: np.ndarray
    targets: np.ndarray
    benign: np.ndarray


def calibrate(tasks: dict[str, HeldOut], *, target_fpr: float, node_keys: Sequence[str] = (),
              node_logits: np.ndarray | None = None, node_targets: np.ndarray | None = None,
              node_mask: np.ndarray | None = None, node_benign: np.ndarray | None = None,
              node_target_fpr: float | None = None, threshold_floor: float = 0.0) -> Calibration:
    """Temperature per task + FPR threshold on its benign items; the node head gets one shared
    temperature (fitted where ``node_mask`` says the node target is known) and per-node
    thresholds at ``node_target_fpr`` (default ``target_fpr``) on benign items; nodes without
    any positive held-out target get threshold 1.0 (never fire)."""
    temps, thresholds = {}, {}
    for task, h in tasks.items():
        temps[task] = fit_temperature(h.logits, h.targets) if len(h.logits) else 1.0
        if not h.benign.any():
            raise ValueError(f"calibrate: no benign held-out items for the {task} head")
        probs = sigmoid(h.logits, temps[task])
        thresholds[task] = threshold_for_fpr(probs[h.benign], target_fpr, floor=threshold_floor)
    node_t, node_thr = 1.0, {}
    if node_keys:
        if node_logits is None or node_targets is None or node_mask is None or node_benign is None:
            raise ValueError("calibrate: node_keys given without node logits/targets/mask/benign")
        known = node_mask.astype(bool)  # (N, K)
        # A node with no positive held-out target was never taught to fire: it never fires (1.0)
        # and stays out of the temperature fit (all-negative targets drive T to its bound).
        taught = ((node_targets > 0.5) & known).any(axis=0)  # (K,)
        fit_mask = known & taught[None, :]
        if fit_mask.any():
            node_t = fit_temperature(node_logits[fit_mask], node_targets[fit_mask])
        probs = sigmoid(node_logits, node_t)  # (N, K)
        fpr = target_fpr if node_target_fpr is None else node_target_fpr
        for k, key in enumerate(node_keys):
            node_thr[key] = (threshold_for_fpr(probs[node_benign, k], fpr, floor=threshold_floor)
                             if taught[k] else 1.0)
    return Calibration(temps, thresholds, node_t, node_thr)


def stratified_split(strata: Sequence[tuple], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..N-1 into (train, held-out) positions, taking ``fraction`` of every
    stratum (e.g. (task, label, dataset)) for held-out; singleton strata stay in train."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_key: dict[tuple, list[int]] = {}
    for i, key in enumerate(strata):
        by_key.setdefault(tuple(key), []).append(i)
    train: list[int] = []
    held: list[int] = []
    for key in sorted(by_key, key=repr):
        idx = np.array(by_key[key])
        rng.shuffle(idx)
        k = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        held += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(sorted(train), dtype=int), np.array(sorted(held), dtype=int)


# ----------------------------------------------------------------------------- head recipe


def split_items(data, idx: np.ndarray, fraction: float, seed: int,
                calib_sources: Sequence[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (task, label, dataset) split of the items ``idx`` into (train, held-out); every item of a
    ``calib_sources`` dataset is held out (it never trains: its benign prompts set the prompt threshold)."""
    idx = np.asarray(idx)
    apart = np.array([data.groups[i] in set(calib_sources) for i in idx], dtype=bool)
    rest = idx[~apart]
    tr, ho = stratified_split([(int(data.task[i]), data.label_key(i), data.groups[i]) for i in rest],
                              fraction, seed)
    return rest[tr], np.sort(np.concatenate([rest[ho], idx[apart]])).astype(int)


def threshold_benign(data, idx: np.ndarray, task: int, calib_sources: Sequence[str] = ()) -> np.ndarray:
    """Which of the ``task`` items among ``idx`` set that task's FPR threshold: its benign items, and for
    the prompt task only those of ``calib_sources`` where any are present (thresholds chosen on benign
    sources held apart from training transfer; the training mix's own held-out split does not, issue 10)."""
    sel = idx[data.task[idx] == task]
    benign = data.target[sel] < 0.5
    if task == 0 and calib_sources:
        apart = np.array([data.groups[i] in set(calib_sources) for i in sel], dtype=bool)
        if (apart & benign).any():
            return benign & apart
    return benign


def train_and_calibrate(model, data, train_idx: np.ndarray, held_idx: np.ndarray,
                        cfg) -> tuple[dict, list[float]]:
    """Fit the heads on ``train_idx``; calibrate on ``held_idx``. Returns (calibration, losses)."""
    losses = fit_heads(model, data, train_idx, cfg)
    out = predict_heads(model, data, held_idx)
    tasks = {}
    for t, task in enumerate(("prompt", "response")):
        sel = data.task[held_idx] == t
        tgt = data.target[held_idx][sel]
        if sel.any():  # a head without held-out items keeps T = 1, threshold 0.5 (card says so)
            tasks[task] = HeldOut(out["task"][sel], tgt, threshold_benign(data, held_idx, t, cfg.calib_sources))
    benign = (data.target[held_idx] < 0.5) & (data.task[held_idx] == 0)
    cal = calibrate(tasks, target_fpr=cfg.target_fpr, node_keys=model.config.node_keys,
                    node_logits=out["nodes"], node_targets=data.node_y[held_idx],
                    node_mask=data.node_m[held_idx], node_benign=benign,
                    node_target_fpr=cfg.node_target_fpr)
    for task in ("prompt", "response"):
        cal.temperature.setdefault(task, 1.0)
        cal.threshold.setdefault(task, 0.5)
    return cal.to_dict(), losses
