"""training.guard.candidate_table on hand-written eval folders: cells, the spread column, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.guard import candidate_table


def _eval(folder: Path, auroc: float, fp_task: int, thr: float) -> Path:
    pooled = {"auroc": auroc, "recall": 0.7, "fpr": 0.2, "f1": 0.5,
              "recall_at_fpr": {"0.05": 0.2, "0.1": 0.4, "0.2": 0.6}}
    by = {s: {"fpr": 0.1} for s in ("gpteacher_codegen", "gpteacher_toolformer", "gpteacher_roleplay",
                                    "dolly_subset")}
    tables = {"prompt_pooled": pooled, "response_pooled": pooled, "prompt_by_dataset": by, "response_by_dataset": by}
    folder.mkdir(parents=True)
    (folder / "dev2.tables.json").write_text(json.dumps(tables))
    for name, m in {"task": {"tp": 9, "fn": 1, "fp": fp_task, "tn": 40 - fp_task},
                    "chat": {"tp": 0, "fn": 0, "fp": 0, "tn": 50},
                    "render": {"recall": 0.8, "fpr": 0.25}}.items():
        (folder / name).mkdir()
        (folder / name / "metrics.json").write_text(json.dumps({"prompt": m}))
    sets = {s: {"flagged": 1, "n": 12} for s in ("typo0_unsafe", "typo1_unsafe", "typo0_safe", "typo1_safe")}
    sets |= {"text_unsafe": {"flagged": 11, "n": 13}, "text_safe": {"flagged": 1, "n": 16}}
    (folder / "probes.json").write_text(json.dumps([{"threshold": thr, "sets": sets}]))
    return folder


def test_cells_and_spread(tmp_path):
    evals = {"a": _eval(tmp_path / "a", 0.8, 4, 0.3), "b": _eval(tmp_path / "b", 0.9, 2, 0.5)}
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:]
            for line in candidate_table.table(evals, ["a", "b"]).splitlines()[2:]}
    assert rows["dev2 prompts, pooled AUROC"] == ["0.800", "0.900", "0.850 (0.800–0.900) |"]
    assert rows["held-out task / verb-sense list: benign flagged, unsafe missed"] == [
        "4/40, 1/10", "2/40, 1/10", "3.0 (2–4)/40, 1.0 (1–1)/10 |"]
    assert rows["calibrated prompt threshold"][:2] == ["0.300", "0.500"]
    assert rows["dev2 prompts, recall at the pooled FPR of 0.05 / 0.10 / 0.20"][0] == "0.200 / 0.400 / 0.600"
    assert len(rows) == len(candidate_table.ROWS)


def test_errors_are_clear(tmp_path, capsys):
    a = _eval(tmp_path / "a", 0.8, 4, 0.3)
    (a / "probes.json").unlink()
    with pytest.raises(ValueError, match="probes.json is missing"):
        candidate_table.table({"a": a})
    b = _eval(tmp_path / "b", 0.8, 4, 0.3)
    with pytest.raises(ValueError, match="--spread"):
        candidate_table.table({"b": b}, ["b", "zzz"])
    (b / "dev2.tables.json").write_text(json.dumps({"prompt_pooled": {}}))
    with pytest.raises(ValueError, match="dev2.prompt_pooled.auroc"):
        candidate_table.table({"b": b})
    assert candidate_table.main([f"x{tmp_path}"]) == 2
    assert "expected a new NAME=DIR" in capsys.readouterr().err


def test_the_demo_row_comes_with_its_file_and_is_then_required_of_all(tmp_path):
    a, b = _eval(tmp_path / "a", 0.8, 4, 0.3), _eval(tmp_path / "b", 0.9, 2, 0.5)
    assert "demo model" not in candidate_table.table({"a": a, "b": b})  # folders from before demo_replies
    (a / "demo").mkdir()
    (a / "demo" / "metrics.json").write_text(json.dumps({"response": {"tp": 0, "fn": 0, "fp": 2, "tn": 5}}))
    with pytest.raises(ValueError, match="b: demo/metrics.json is missing"):
        candidate_table.table({"a": a, "b": b})
    (b / "demo").mkdir()
    (b / "demo" / "metrics.json").write_text(json.dumps({"response": {"tp": 0, "fn": 0, "fp": 0, "tn": 7}}))
    last = candidate_table.table({"a": a, "b": b}, ["a", "b"]).splitlines()[-1]
    assert last == "| demo model's answers to benign prompts flagged | 2/7 | 0/7 | 1.0 (0–2)/7 |"
