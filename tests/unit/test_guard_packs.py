"""Several data packs in one recipe (training.guard.packs): roots, per-source rules, label weights,
held-apart calibration sources. Tiny fixtures built here; every number is computed by hand."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from training.guard.calibrate import split_items, threshold_benign
from training.guard.guard_data import GuardExample
from training.guard.packs import pack_root, parse_assignments, prepare_source_rows, question_key, split_pack


@dataclass
class Rules:
    """The DistillConfig fields prepare_source_rows reads."""

    seed: int = 0
    source_caps: list[str] = field(default_factory=list)
    source_weights: list[str] = field(default_factory=list)
    response_only_sources: list[str] = field(default_factory=list)
    question_grouped_sources: list[str] = field(default_factory=list)


def _ex(uid, group, prompt="p", lp=None, lr=None, response=None):
    return GuardExample(uid, prompt, response=response, label_prompt=lp, label_response=lr, group=group)


def test_split_pack_and_roots(tmp_path, monkeypatch):
    assert split_pack("dev2:index/a.jsonl") == ("dev2", "index/a.jsonl")
    assert split_pack("index/a.jsonl") == (None, "index/a.jsonl")
    assert split_pack("/abs/x.jsonl") == (None, "/abs/x.jsonl")
    monkeypatch.setenv("SPAGUARD_SHARED_DIR", str(tmp_path / "shared"))
    assert pack_root("dev2", [], tmp_path) == tmp_path / "shared" / "data" / "dev2"
    assert pack_root("dev2", ["dev2=/elsewhere/p"], tmp_path) == Path("/elsewhere/p")
    assert pack_root("mine", ["mine=rel/p"], tmp_path) == tmp_path / "rel" / "p"


@pytest.mark.parametrize("entries", [["a"], ["=1"], ["a="], ["a=1", "a=2"]])
def test_parse_assignments_refuses_malformed(entries):
    with pytest.raises(ValueError, match="source_caps"):
        parse_assignments(entries, "source_caps")


def test_response_only_nulls_dropped_and_weights():
    rows = [_ex("f1", "fuzz", "Q one?", lp=1, lr=0, response="No."),
            _ex("f2", "fuzz", "q  ONE?", lp=1, lr=1, response="Sure..."),
            _ex("f3", "fuzz", "Q two?", lp=1, lr=1, response="Ok..."),
            _ex("d1", "tweets", lp=0), _ex("d2", "tweets"), _ex("d3", "tweets", lp=1), _ex("d4", "tweets")]
    cfg = Rules(response_only_sources=["fuzz"], question_grouped_sources=["fuzz"],
                source_weights=["fuzz=1", "tweets=0.5"])
    out, report = prepare_source_rows(rows, cfg)
    fuzz = [e for e in out if e.group == "fuzz"]
    assert [e.label_prompt for e in fuzz] == [None, None, None]  # prompt labels dropped
    assert [e.label_response for e in fuzz] == [0, 1, 1]
    # f1 and f2 ask the same question (case and spacing folded): one cluster; f3 its own
    assert fuzz[0].cv_group == fuzz[1].cv_group == question_key("q one?") != fuzz[2].cv_group
    assert [e.uid for e in out if e.group == "tweets"] == ["d1", "d3"]  # the two nulls never train
    assert report["tweets"] == {"rows": 4, "kept": 2, "dropped_unlabelled": 2, "weight": 0.5}
    assert all(e.extra["label_weight"] == 0.5 for e in out if e.group == "tweets")


def test_cap_keeps_whole_clusters():
    # 3 questions with 4, 3 and 1 answers; cap 4: whole clusters only, so 4 (one of 4) or 3+1
    rows = [_ex(f"a{i}", "fuzz", "A?", lr=i % 2, response="r") for i in range(4)]
    rows += [_ex(f"b{i}", "fuzz", "B?", lr=1, response="r") for i in range(3)] + [_ex("c0", "fuzz", "C?", lr=0, response="r")]
    cfg = Rules(question_grouped_sources=["fuzz"], source_caps=["fuzz=4"])
    for seed in range(6):
        out, report = prepare_source_rows(rows, Rules(**{**cfg.__dict__, "seed": seed}))
        kept = {e.prompt for e in out}
        assert len(out) == 4 and kept in ({"A?"}, {"B?", "C?"}), (seed, kept)
        assert report["fuzz"]["kept"] == 4


def test_rule_naming_a_missing_source_is_refused():
    with pytest.raises(ValueError, match="nowhere"):
        prepare_source_rows([_ex("x", "a", lp=0)], Rules(source_caps=["nowhere=3"]))


def test_group_balance_times_label_weight(monkeypatch):
    """build_head_data: weight = n_group^-0.5 * label_weight, normalised to mean 1. Groups a (4 items,
    weight 0.5) and b (1 item, weight 1): raw 0.25 each for a, 1.0 for b; mean 0.4 → 0.625 and 2.5."""
    from training.guard import heads

    rows = [GuardExample(f"a{i}", f"text {i}", label_prompt=i % 2, group="a", extra={"label_weight": 0.5})
            for i in range(4)] + [GuardExample("b0", "other", label_prompt=0, group="b")]

    class _Cfg:
        group_balance = 0.5

    class _Model:
        class config:  # noqa: N801
            node_keys: list[str] = []

    monkeypatch.setattr(heads, "encode_items", lambda model, items, cfg: torch.zeros(len(items), 3))
    data = heads.build_head_data(_Model(), rows, [], _Cfg())
    assert np.allclose(data.weight, [0.625] * 4 + [2.5])


class _Data:
    """The HeadData fields split_items / threshold_benign read."""

    def __init__(self, groups, task, target):
        self.groups, self.task, self.target = groups, np.array(task), np.array(target, dtype=float)

    def label_key(self, i):
        return int(self.target[i] >= 0.5)


def test_calibration_sources_never_train_and_set_the_prompt_threshold():
    groups = ["train"] * 10 + ["cal"] * 3 + ["train"] * 2
    task = [0] * 13 + [1, 1]
    target = [0, 1] * 5 + [0, 0, 0] + [0, 1]
    data = _Data(groups, task, target)
    train, held = split_items(data, np.arange(15), 0.2, 0, ["cal"])
    # the 12 others: strata of 5, 5, 1, 1 items give round(5 * 0.2) = 1, 1, 0, 0 held → 2 + the 3 of "cal"
    assert {10, 11, 12} <= set(held) and not {10, 11, 12} & set(train) and len(held) == 5
    assert sorted(np.concatenate([train, held])) == list(range(15))
    # without calibration sources "cal" is one more stratum of 3: round(0.6) = 1 held, 2 train
    t0, _ = split_items(data, np.arange(15), 0.2, 0)
    assert len(set(t0) & {10, 11, 12}) == 2
    # prompt threshold: only the calibration sources' benign prompts; response: every benign response
    mask = threshold_benign(data, held, 0, ["cal"])
    prompts = held[data.task[held] == 0]
    assert [int(i) for i, m in zip(prompts, mask) if m] == [10, 11, 12]
    assert list(threshold_benign(data, np.array([13, 14]), 1, ["cal"])) == [True, False]
    # a held set without any calibration-source item falls back to its own benign prompts
    assert list(threshold_benign(data, np.array([0, 1, 2]), 0, ["cal"])) == [True, False, True]


def test_load_examples_reads_a_named_pack_with_pack_relative_images(tmp_path, monkeypatch):
    """A 'pack:pattern' entry resolves under <shared>/data/<pack>, its image paths against the pack root."""
    from PIL import Image

    from training.guard.config import DistillConfig
    from training.guard.distill import load_examples

    pack = tmp_path / "shared" / "data" / "extra"
    (pack / "index").mkdir(parents=True)
    (pack / "images").mkdir()
    Image.new("RGB", (8, 8), "white").save(pack / "images" / "w.png")
    rows = [{"uid": "i0", "dataset": "imgs", "prompt": "What is this?", "images": ["images/w.png"],
             "label_prompt_unsafe": 0},
            {"uid": "i1", "dataset": "imgs", "prompt": "Hm", "images": [], "label_prompt_unsafe": None}]
    (pack / "index" / "imgs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SPAGUARD_SHARED_DIR", str(tmp_path / "shared"))
    cfg = DistillConfig(guard_files=["extra:index/*.jsonl"], source_weights=["imgs=0.5"])
    examples, _, counts = load_examples(cfg)
    assert counts["extra:index/imgs.jsonl"] == 2
    assert counts["source rules"]["imgs"] == {"rows": 2, "kept": 1, "dropped_unlabelled": 1, "weight": 0.5}
    (ex,) = examples
    assert ex.images == ((pack / "images" / "w.png").read_bytes(),)
    with pytest.raises(FileNotFoundError, match="missing:index"):
        load_examples(DistillConfig(guard_files=["missing:index/*.jsonl"]))
