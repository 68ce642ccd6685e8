"""training.guard.card_record: a crossval-finetune report lands in an artifact's card.json beside what is there;
a folder without a card or a report that is not one exits 2 with one line and writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.guard import card_record


def _report() -> dict:
    macro = {"recall": 0.8, "fpr": 0.1, "f1": 0.85, "auroc": 0.9}
    arm = {"prompt_by_dataset": {"a": {"n": 3}}, "prompt_macro": macro}
    return {"folds": [{"sources": ["a"], "held_out": 3, "trained": 9}], "frozen": arm, "lora": arm,
            "lora_without": arm, "frozen_without": arm, "ablated_sources": ["b"], "command": "spaguard x", "seed": 0,
            "seconds": 1.5, "data": {"a": 3}}


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    (tmp_path / "card.json").write_text(json.dumps({"seed": 0, "metrics": {"kfold": {"prompt": {"auroc": 0.9}}}}))
    return tmp_path


def test_the_report_is_merged_into_the_card_and_keeps_what_was_there(artifact: Path, tmp_path: Path):
    rep = tmp_path / "lodo_finetune.json"
    rep.write_text(json.dumps(_report()))
    assert card_record.main(["--into", str(artifact), "--finetune-report", str(rep)]) == 0
    card = json.loads((artifact / "card.json").read_text())
    assert card["seed"] == 0 and card["metrics"]["kfold"]["prompt"]["auroc"] == 0.9
    block = card["metrics"]["source_folds_finetune"]
    assert set(block) >= {"frozen", "lora", "frozen_without", "lora_without", "folds", "ablated_sources", "command"}
    assert block["lora"]["prompt_macro"]["recall"] == 0.8 and block["folds"][0]["sources"] == ["a"]
    assert block["command"] == "spaguard x" and "card_record" in block["recorded_by"]
    assert "data" not in block  # the card has its own data counts; the report's are the folds' recipe


@pytest.mark.parametrize("content", ["[1, 2]", "{\"lora\": {}}", "not json"])
def test_a_report_that_is_not_one_exits_2_and_leaves_the_card(artifact: Path, tmp_path: Path, content: str, capsys):
    before = (artifact / "card.json").read_text()
    rep = tmp_path / "bad.json"
    rep.write_text(content)
    assert card_record.main(["--into", str(artifact), "--finetune-report", str(rep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("card_record: error:")
    assert (artifact / "card.json").read_text() == before


def test_a_folder_without_a_card_exits_2_and_creates_none(tmp_path: Path, capsys):
    rep = tmp_path / "r.json"
    rep.write_text(json.dumps(_report()))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert card_record.main(["--into", str(empty), "--finetune-report", str(rep)]) == 2
    assert "no card.json" in capsys.readouterr().err and not (empty / "card.json").exists()
