"""Cross-validation of the head recipe: grouped k-fold and leave-one-dataset-out, never tuned on the test fold.

Contract
--------
* ``cross_validate(model, data, cfg)``: out-of-fold metrics of the full recipe (heads + calibration) as
  ``{"kfold": ..., "leave_one_dataset_out": ...}`` (see its docstring).
* ``response_leave_one_source_out(model, data, cfg)``: the same for the response head, per source.
Every fold runs ``training.guard.calibrate.train_and_calibrate`` exactly as the final build does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from models.artifact import sigmoid
from training.guard.calibrate import split_items, train_and_calibrate
from training.guard.evaluate import binary_metrics
from training.guard.heads import predict_heads



def _oof_metrics(data, preds: dict[int, tuple[float, bool]], task: int) -> dict | None:
    idx = sorted(i for i in preds if data.task[i] == task)
    if not idx:
        return None
    return binary_metrics([data.label_key(i) for i in idx], [preds[i][0] for i in idx],
                          [preds[i][1] for i in idx])


def _fit_predict(model, data, train_idx: np.ndarray, test_idx: np.ndarray, cfg,
                 preds: dict[int, tuple[float, bool]]) -> None:
    """The shipped recipe on ``train_idx`` (inner calibration split included); calibrated
    probabilities and flags for ``test_idx`` go into ``preds``."""
    fit_idx, cal_idx = split_items(data, train_idx, cfg.calib_fraction, cfg.seed)
    cal, _ = train_and_calibrate(model, data, fit_idx, cal_idx, cfg)
    logits = predict_heads(model, data, test_idx)["task"]
    for i, z in zip(test_idx, logits):
        name = "prompt" if data.task[i] == 0 else "response"
        p = sigmoid(z, cal["temperature"][name])
        preds[int(i)] = (float(p), bool(p >= cal["threshold"][name]))


def cross_validate(model, data, cfg) -> dict[str, Any]:
    """Out-of-fold metrics of the full recipe (heads + calibration), never tuned on the test fold.

    * ``kfold``: ``cfg.cv_folds`` folds, stratified by (task, label) and grouped by near-duplicate
      cluster (a JailbreakBench goal and its jailbreaks stay in one fold).
    * ``leave_one_dataset_out``: for every dataset with prompt labels, train on the others and
      score it; pooled metrics over all held-out datasets plus each dataset's own (one class per
      dataset is common, so its AUROC is null and recall/FPR tell the story).
    """
    out: dict[str, Any] = {}
    strata = [f"{data.task[i]}:{data.label_key(i)}" for i in range(data.n)]
    if cfg.cv_folds:
        preds: dict[int, tuple[float, bool]] = {}
        folds = StratifiedGroupKFold(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        for train_idx, test_idx in folds.split(np.zeros(data.n), strata, data.cv_groups):
            _fit_predict(model, data, train_idx, test_idx, cfg, preds)
        out["kfold"] = {"folds": cfg.cv_folds, "prompt": _oof_metrics(data, preds, 0),
                        "response": _oof_metrics(data, preds, 1)}
    if cfg.cv_leave_one_dataset_out:
        preds, per = {}, {}
        groups = np.array(data.groups)
        for g in sorted({data.groups[i] for i in range(data.n) if data.task[i] == 0}):
            held = np.flatnonzero((groups == g) & (data.task == 0))
            train_idx = np.flatnonzero(groups != g)
            _fit_predict(model, data, train_idx, held, cfg, preds)
            per[g] = _oof_metrics(data, {int(i): preds[int(i)] for i in held}, 0)
        out["leave_one_dataset_out"] = {"prompt_pooled": _oof_metrics(data, preds, 0),
                                        "prompt_by_dataset": per}
    return out


def response_leave_one_source_out(model, data, cfg) -> dict:
    """Leave-one-dataset-out for the response head: for every source with response items, train
    the whole recipe without that source *and* without any item sharing a CV cluster with it (a
    moderation text also seen as a prompt, a jailbreak's prompt row), then score its responses.
    Returns ``{"response_pooled": M, "response_by_dataset": {source: M}}``; a benign-only source's
    ``fpr`` is the head's false-positive rate on benign responses it never saw."""
    preds: dict[int, tuple[float, bool]] = {}
    per: dict[str, Any] = {}
    groups, clusters = np.array(data.groups), np.array(data.cv_groups)
    for g in sorted({data.groups[i] for i in np.flatnonzero(data.task == 1)}):
        held = np.flatnonzero((groups == g) & (data.task == 1))
        train_idx = np.flatnonzero((groups != g) & ~np.isin(clusters, clusters[held]))
        _fit_predict(model, data, train_idx, held, cfg, preds)
        per[g] = _oof_metrics(data, {int(i): preds[int(i)] for i in held}, 1)
    return {"response_pooled": _oof_metrics(data, preds, 1), "response_by_dataset": per}
