"""Cross-validation of the head recipe: grouped k-fold and leave-one-dataset-out, never tuned on the test fold.

Contract
--------
* ``cross_validate(model, data, cfg)``: out-of-fold metrics of the full recipe (heads + calibration) as
  ``{"kfold": ..., "leave_one_dataset_out": ...}`` (see its docstring).
* ``response_leave_one_source_out(model, data, cfg)``: the same for the response head, per source.
* ``macro_summary(per_source)``: every held-out source counts once (recall, FPR, F1, AUROC); the headline
  generalisation figure. ``lodo_markdown`` renders the per-source tables with their macro rows.
Leave-one-dataset-out is grouped: nothing sharing a near-copy cluster (``cv_group``) with the held-out
source trains.
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
    fit_idx, cal_idx = split_items(data, train_idx, cfg.calib_fraction, cfg.seed, cfg.calib_sources)
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
        groups, clusters = np.array(data.groups), np.array(data.cv_groups)
        for g in sorted({data.groups[i] for i in range(data.n) if data.task[i] == 0}):
            held = np.flatnonzero((groups == g) & (data.task == 0))
            # Grouped: no item that shares a near-copy cluster with the held-out source trains (a jailbreak
            # of a held-out goal, a moderation text also seen as a response's prompt).
            train_idx = np.flatnonzero((groups != g) & ~np.isin(clusters, clusters[held]))
            _fit_predict(model, data, train_idx, held, cfg, preds)
            per[g] = _oof_metrics(data, {int(i): preds[int(i)] for i in held}, 0)
        out["leave_one_dataset_out"] = {"prompt_pooled": _oof_metrics(data, preds, 0),
                                        "prompt_by_dataset": per, "prompt_macro": macro_summary(per)}
    return out


def macro_summary(per_source: dict[str, dict | None]) -> dict[str, Any]:
    """The macro average of per-source metrics: every held-out source counts once, whatever its size.

    ``recall`` over the sources with unsafe items, ``fpr`` over those with safe items, ``f1`` and ``auroc``
    over those where they are defined; ``sources`` counts each. A generalisation figure: a large source
    cannot hide a small one it fails on."""
    def mean(key: str) -> tuple[float | None, int]:
        vals = [m[key] for m in per_source.values() if m and m.get(key) is not None]
        return (float(np.mean(vals)) if vals else None), len(vals)

    out: dict[str, Any] = {"sources": {}}
    for key in ("recall", "fpr", "f1", "auroc"):
        out[key], out["sources"][key] = mean(key)
    return out


def lodo_markdown(lodo: dict[str, Any]) -> str:
    """The leave-one-dataset-out report as Markdown tables: one row per held-out source, then the macro row."""
    lines: list[str] = []
    for task in ("prompt", "response"):
        per = lodo.get(f"{task}_by_dataset")
        if not per:
            continue
        lines += [f"| {task}: held-out source | n | recall | FPR | F1 | AUROC |", "|---|---|---|---|---|---|"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        for source, m in per.items():
            if m:
                lines.append(f"| {source} | {m['n']} | {fmt(m['recall'])} | {fmt(m['fpr'])} | {fmt(m['f1'])} | "
                             f"{fmt(m['auroc'])} |")
        macro = lodo.get(f"{task}_macro") or macro_summary(per)
        lines += [f"| **macro ({len(per)} sources)** | | {fmt(macro['recall'])} | {fmt(macro['fpr'])} | "
                  f"{fmt(macro['f1'])} | {fmt(macro['auroc'])} |", ""]
    return "\n".join(lines)


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
    return {"response_pooled": _oof_metrics(data, preds, 1), "response_by_dataset": per,
            "response_macro": macro_summary(per)}
