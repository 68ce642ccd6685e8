"""Leave-one-dataset-out on a tiny fixture: which items train for each held-out source (grouped by near-copy
cluster), the per-source metrics and the macro average, all computed by hand in the comments."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from training.guard import crossval, heads

# item: 0    1    2    3    4    5    6
# src:  A    A    B    B    C    C    C
# label 1    0    1    1    0    0    1
# clus  a1   a2   x    b2   x    c2   c3     ("x" ties B's item 2 to C's item 4: a near-copy)
GROUPS = ["A", "A", "B", "B", "C", "C", "C"]
LABELS = np.array([1.0, 0, 1, 1, 0, 0, 1])
CLUSTERS = ["a1", "a2", "x", "b2", "x", "c2", "c3"]
# The "model" says: item -> (probability, flagged)
PREDS = {0: (0.9, True), 1: (0.2, False), 2: (0.8, True), 3: (0.3, False), 4: (0.7, True), 5: (0.1, False),
         6: (0.6, True)}


def _data() -> heads.HeadData:
    n = len(GROUPS)
    return heads.HeadData(x=None, task=np.zeros(n, dtype=int), hard=LABELS, soft=np.full(n, np.nan),
                          node_y=np.zeros((n, 1)), node_m=np.zeros((n, 1)), weight=np.ones(n), groups=GROUPS,
                          cv_groups=CLUSTERS, pair_x=None)


def test_lodo_is_grouped_and_its_macro_is_per_source(monkeypatch):
    seen = {}

    def fake_fit_predict(model, data, train_idx, test_idx, cfg, preds):
        seen[data.groups[int(test_idx[0])]] = sorted(train_idx.tolist())
        for i in test_idx:
            preds[int(i)] = PREDS[int(i)]

    monkeypatch.setattr(crossval, "_fit_predict", fake_fit_predict)
    cfg = SimpleNamespace(cv_folds=0, cv_leave_one_dataset_out=True, seed=0)
    lodo = crossval.cross_validate(None, _data(), cfg)["leave_one_dataset_out"]
    # Held-out B: item 4 of C shares cluster "x" with B's item 2, so it does not train.
    assert seen == {"A": [2, 3, 4, 5, 6], "B": [0, 1, 5, 6], "C": [0, 1, 3]}
    per = lodo["prompt_by_dataset"]
    assert (per["A"]["recall"], per["A"]["fpr"]) == (1.0, 0.0)  # 0 caught, 1 passed
    assert (per["B"]["recall"], per["B"]["fpr"]) == (0.5, None)  # 2 caught, 3 missed; no safe item
    assert per["C"]["recall"] == 1.0 and per["C"]["fpr"] == 0.5  # 6 caught; 4 flagged, 5 passed
    macro = lodo["prompt_macro"]
    assert macro["recall"] == pytest.approx((1.0 + 0.5 + 1.0) / 3) and macro["sources"]["recall"] == 3
    assert macro["fpr"] == pytest.approx((0.0 + 0.5) / 2) and macro["sources"]["fpr"] == 2
    # F1: A = 1.0; B: precision 1, recall 0.5 -> 2/3; C: precision 1/2, recall 1 -> 2/3
    assert macro["f1"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    # Pooled: 3 of 4 unsafe caught (3 missed), 1 of 3 safe flagged (4).
    assert lodo["prompt_pooled"]["recall"] == pytest.approx(3 / 4) and lodo["prompt_pooled"]["fpr"] == pytest.approx(1 / 3)
    table = crossval.lodo_markdown(lodo)
    assert "| B | 2 | 0.500 | - | 0.667 | - |" in table
    assert "| **macro (3 sources)** | | 0.833 | 0.250 | 0.778 |" in table


def test_macro_summary_skips_undefined_metrics():
    got = crossval.macro_summary({"a": {"recall": 1.0, "fpr": None, "f1": None, "auroc": None}, "b": None})
    assert got == {"recall": 1.0, "fpr": None, "f1": None, "auroc": None,
                   "sources": {"recall": 1, "fpr": 0, "f1": 0, "auroc": 0}}


def test_crossval_guard_cli_on_a_tiny_recipe(tmp_path, monkeypatch):
    """The CLI end to end on a tiny random encoder: three sources, each held out once."""
    import json
    import random
    from pathlib import Path

    from models.encoders import build_tiny_text_encoder
    from training.guard import lodo_report

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = random.Random(0)
    rows = [{"uid": f"u{i}", "dataset": f"set{i % 3}", "prompt": f"tell me about {rng.choice(w)} now",
             "label_prompt_unsafe": i % 2} for i, w in
            ((i, ["bomb", "poison", "steal"] if i % 2 else ["bread", "garden", "poem"]) for i in range(90))]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    encoder = build_tiny_text_encoder(tmp_path / "enc", seed=0)
    recipe = Path(__file__).resolve().parents[2] / "training" / "configs" / "guard_tiny.yaml"
    out, art = tmp_path / "lodo", tmp_path / "artifact"
    art.mkdir()
    (art / "card.json").write_text(json.dumps({"metrics": {"held_out": {"x": 1}}, "seed": 0}))
    assert lodo_report.main(["--config", str(recipe), "--encoder", str(encoder), "--data_root", str(tmp_path),
                             "--cache_dir", str(tmp_path / "cache"), "--out", str(out), "--into", str(art)]) == 0
    card = json.loads((art / "card.json").read_text())
    assert card["metrics"]["held_out"] == {"x": 1} and "--into" in card["metrics"]["lodo_source"]["command"]
    assert card["metrics"]["leave_one_dataset_out"] == json.loads((out / "lodo.json").read_text())[
        "leave_one_dataset_out"]
    assert lodo_report.main(["--config", str(recipe), "--into", str(tmp_path / "nowhere")]) == 2
    report = json.loads((out / "lodo.json").read_text())
    per = report["leave_one_dataset_out"]["prompt_by_dataset"]
    assert set(per) == {"set0", "set1", "set2"} and all(m["n"] == 30 for m in per.values())
    assert report["leave_one_dataset_out"]["prompt_macro"]["sources"]["recall"] == 3
    assert "**macro (3 sources)**" in (out / "lodo.md").read_text()
    assert lodo_report.main(["--config", str(recipe), "--data_root", str(tmp_path / "missing"),
                             "--out", str(out)]) == 2
