"""training.guard.items_report: per-source tables from eval-guard --items, numbers computed by hand."""

from __future__ import annotations

import json

import pytest

from training.guard import items_report


def _rec(task, ds, label, p, flagged):
    return {"uid": f"{ds}:{p}", "dataset": ds, "task": task, "label": label, "unsafe_prob": p, "flagged": flagged}


RECORDS = [
    # source a: 2 unsafe (1 caught), 2 safe (1 flagged) → recall 0.5, FPR 0.5
    _rec("prompt", "a", 1, 0.9, True), _rec("prompt", "a", 1, 0.2, False),
    _rec("prompt", "a", 0, 0.8, True), _rec("prompt", "a", 0, 0.1, False),
    # source b: benign only, 1 of 4 flagged → FPR 0.25, recall undefined
    *[_rec("prompt", "b", 0, p, p > 0.5) for p in (0.1, 0.2, 0.3, 0.7)],
    # responses of c: tp 1, fn 1, fp 0 → precision 1, recall 0.5, F1 2/3
    _rec("response", "c", 1, 0.9, True), _rec("response", "c", 1, 0.4, False), _rec("response", "c", 0, 0.1, False),
    _rec("prompt", "c", 1, 0.0, False),  # skipped below
]


def test_per_source_and_macro_by_hand():
    rep = items_report.per_source(RECORDS, skip=["prompt:c"])
    a, b = rep["prompt_by_dataset"]["a"], rep["prompt_by_dataset"]["b"]
    assert (a["recall"], a["fpr"], b["fpr"], b["recall"]) == (0.5, 0.5, 0.25, None)
    assert "c" not in rep["prompt_by_dataset"]
    macro = rep["prompt_macro"]
    assert macro["recall"] == 0.5 and macro["fpr"] == pytest.approx(0.375)  # (0.5 + 0.25) / 2
    assert macro["sources"] == {"recall": 1, "fpr": 2, "f1": 1, "auroc": 1}
    assert rep["response_by_dataset"]["c"]["f1"] == pytest.approx(2 / 3)


def test_pooled_metrics_and_recall_at_a_matched_fpr_by_hand():
    rep = items_report.per_source(RECORDS, skip=["prompt:c"], fprs=[0.0, 0.2, 0.5, 0.9])
    pooled = rep["prompt_pooled"]
    # prompts of a + b: unsafe 0.9 (flagged), 0.2; safe 0.8 (flagged), 0.1, 0.1, 0.2, 0.3, 0.7 (flagged)
    assert pooled["n"] == 8 and pooled["recall"] == 0.5 and pooled["fpr"] == pytest.approx(2 / 6)
    # safe scores high to low 0.8 0.7 0.3 0.2 0.1 0.1: at FPR 0 the bar is 0.8 (0.9 passes it), at 0.2
    # floor(1.2) = 1 safe above -> bar 0.7, at 0.5 three above -> bar 0.2 (0.2 is not above it)
    assert pooled["recall_at_fpr"] == {"0.0": 0.5, "0.2": 0.5, "0.5": 0.5, "0.9": 1.0}  # at 0.9: bar 0.1
    assert items_report.recall_at_fpr([_rec("prompt", "x", 1, 0.5, True)], 0.1) is None  # no safe record
    assert rep["response_pooled"]["f1"] == pytest.approx(2 / 3)


def test_cli_prints_tables_and_refuses_bad_lines(tmp_path, capsys):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert items_report.main([str(path), "--skip", "prompt:c", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "| a | 4 | 0.500 | 0.500 |" in out and "**macro (2 sources)**" in out
    assert "| prompt | 8 |" in out
    assert json.loads((tmp_path / "r.json").read_text())["response_macro"]["f1"] == pytest.approx(2 / 3)
    path.write_text('{"task": "prompt"}\n')
    assert items_report.main([str(path)]) == 2
    assert "missing" in capsys.readouterr().err
