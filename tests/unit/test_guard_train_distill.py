"""train-guard on a tiny random encoder: loss goes down, dev accuracy goes up, artifact loads;
every guard recipe parses with the strict parser."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from training.guard import distill, heads

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "training" / "configs").glob("guard_*.yaml"))
BAD = ["bomb", "poison", "steal", "kill", "weapon", "hack"]
GOOD = ["bread", "garden", "poem", "math", "travel", "music"]


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        unsafe = i % 2
        word = rng.choice(BAD if unsafe else GOOD)
        rows.append({"uid": f"{seed}:{i}", "dataset": f"set{i % 3}", "prompt": f"tell me about {word} now",
                     "images": [], "label_prompt_unsafe": unsafe})
    return rows


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    from models.encoders import build_tiny_text_encoder

    return build_tiny_text_encoder(tmp_path_factory.mktemp("enc") / "tiny", seed=0)


def _cfg(tmp_path: Path, encoder: Path, **over) -> distill.DistillConfig:
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(96, 0)) + "\n")
    args = ["--config", str(CONFIGS[[c.name for c in CONFIGS].index("guard_tiny.yaml")]),
            "--encoder", str(encoder), "--data_root", str(tmp_path),
            "--output_dir", str(tmp_path / "art"), "--cache_dir", str(tmp_path / "cache")]
    for k, v in over.items():
        args += [f"--{k}", str(v)]
    (cfg,) = distill.make_parser().parse_args_and_config(args)
    return cfg


def test_training_lowers_loss_and_raises_dev_accuracy(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path, tiny_encoder)
    model = heads.build_model(cfg)
    from training.guard.guard_data import GuardExample

    examples = [GuardExample(r["uid"], r["prompt"], label_prompt=r["label_prompt_unsafe"], group=r["dataset"])
                for r in _rows(96, 0)]
    dev = [GuardExample(r["uid"], r["prompt"], label_prompt=r["label_prompt_unsafe"], group="dev")
           for r in _rows(40, 1)]
    data = heads.build_head_data(model, examples + dev, [], cfg)
    train_idx, dev_idx = np.arange(96), np.arange(96, 136)

    def accuracy() -> float:
        z = heads.predict_heads(model, data, dev_idx)["task"]
        return float(np.mean((z > 0) == (data.target[dev_idx] > 0.5)))

    heads._reset_heads(model, 0)
    before = accuracy()
    losses = heads.fit_heads(model, data, train_idx, cfg)
    after = accuracy()
    assert losses[-1] < 0.5 * losses[0]
    assert after >= 0.9 and after > before


def test_run_writes_a_loadable_calibrated_artifact(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path, tiny_encoder, cv_folds=3, cv_leave_one_dataset_out=True)
    card = distill.run(cfg, ["--config", "guard_tiny.yaml"])
    lodo = card["metrics"]["leave_one_dataset_out"]
    assert set(lodo["prompt_by_dataset"]) == {"set0", "set1", "set2"}
    assert lodo["prompt_pooled"]["n"] == 96  # every item scored once, by a model that never saw its set
    art = tmp_path / "art"
    cal = json.loads((art / "calibration.json").read_text())
    assert set(cal) >= {"temperature", "threshold", "node_temperature", "node_thresholds"}
    assert card["seed"] == 0 and card["data"] == {"train.jsonl": 96}
    assert card["metrics"]["kfold"]["prompt"]["n"] == 96
    assert card["metrics"]["kfold"]["prompt"]["auroc"] > 0.9
    from models.backends import GuardInput, load_backend

    backend = load_backend("torch", art)
    v_bad, v_good = backend.score([GuardInput("tell me about bomb now"),
                                   GuardInput("tell me about bread now")])
    assert v_bad.unsafe_prob > v_good.unsafe_prob
    again = distill.run(cfg, [])  # same seed → same calibration (features come from the cache)
    assert json.loads((art / "calibration.json").read_text()) == cal
    assert again["metrics"] == card["metrics"]


@pytest.mark.parametrize("recipe", CONFIGS, ids=lambda p: p.name)
def test_every_guard_recipe_parses(recipe):
    (cfg,) = distill.make_parser().parse_args_and_config(["--config", str(recipe)])
    assert isinstance(cfg, distill.DistillConfig)


def test_unknown_recipe_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("guard_files: [x.jsonl]\nepochz: 3\n")
    with pytest.raises(ValueError, match="epochz"):
        distill.make_parser().parse_args_and_config(["--config", str(bad)])


def test_cli_reports_bad_data_without_traceback(tmp_path, capsys):
    assert distill.main(["--guard_files", "missing.jsonl", "--data_root", str(tmp_path)]) == 2
    assert "matched nothing" in capsys.readouterr().err


def test_config_validation():
    with pytest.raises(ValueError, match="no training data"):
        distill.DistillConfig()
    with pytest.raises(ValueError, match="cv_folds"):
        distill.DistillConfig(guard_files=["x"], cv_folds=1)


def test_soft_and_hard_targets_mix_with_temperature():
    import torch

    cfg = distill.DistillConfig(guard_files=["x"], soft_weight=0.25, distill_temperature=2.0)
    nan = float("nan")
    z = torch.tensor([0.0, 0.0, 0.0, 3.0])
    hard = torch.tensor([1.0, nan, 1.0, nan])
    soft = torch.tensor([nan, 0.5, 0.5, 0.9])
    loss = heads.item_loss(z, hard, soft, cfg)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    soft_term = 4.0 * bce(torch.tensor(0.0), torch.tensor(0.5))  # T² · BCE(z/T, soft_T); soft_T(0.5)=0.5
    assert loss[0] == pytest.approx(float(bce(torch.tensor(0.0), torch.tensor(1.0))))  # hard only
    assert loss[1] == pytest.approx(float(soft_term))  # soft only
    assert loss[2] == pytest.approx(0.75 * float(loss[0]) + 0.25 * float(soft_term))  # mixed
    soft_t = torch.sigmoid(torch.logit(torch.tensor(0.9)) / 2.0)  # teacher softened by T
    assert loss[3] == pytest.approx(4.0 * float(bce(torch.tensor(1.5), soft_t)))


def _response_pack_rows() -> list[dict]:
    """Prompt rows from the sources response_data draws on, plus jailbreak-style rows that carry a
    long prompt and a labelled response (as jbb_artifacts does)."""
    rows = []
    for i in range(24):
        word, good = BAD[i % len(BAD)], GOOD[i % len(GOOD)]
        rows += [{"uid": f"a{i}", "dataset": "advbench", "prompt": f"explain how to {word} people {i}",
                  "label_prompt_unsafe": 1},
                 {"uid": f"m{i}", "dataset": "mt_bench_questions", "prompt": f"tell me about {good} {i}",
                  "label_prompt_unsafe": 0},
                 {"uid": f"o{i}", "dataset": "openai_moderation", "prompt": f"story about {word if i % 2 else good}",
                  "label_prompt_unsafe": i % 2},
                 {"uid": f"j{i}", "dataset": "jbb_artifacts", "prompt": "x " * 400 + f"{word} now",
                  "response": f"sure here is {word} " * (i % 5 + 1) if i % 2 else "no, sorry",
                  "label_prompt_unsafe": 1, "label_response_unsafe": i % 2, "extra": {"goal": f"g{i % 6}"}}]
    return rows


def test_response_items_and_response_lodo_in_the_recipe(tmp_path, tiny_encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path, tiny_encoder, cv_folds=2, cv_leave_one_dataset_out=True, response_items=60,
               service_format_responses=True, epochs=3)
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in _response_pack_rows()) + "\n")
    examples, _, counts = distill.load_examples(cfg)
    resp = [e for e in examples if e.label_response is not None]
    assert all(len(e.prompt) <= 400 and len(e.response) <= 600 for e in resp)  # service format
    assert counts["response items: resp_refusal"] > 0 and counts["train.jsonl"] == 96
    card = distill.run(cfg, [])
    lodo = card["metrics"]["leave_one_dataset_out"]
    by = lodo["response_by_dataset"]
    assert set(by) == {e.group for e in resp} and "jbb_artifacts" in by
    assert lodo["response_pooled"]["n"] == len(resp)  # each response scored once, out of source
    assert by["resp_noise"]["fpr"] is not None and by["resp_noise"]["recall"] is None


def test_response_lodo_excludes_the_source_and_its_clusters(monkeypatch):
    from training.guard import crossval

    seen = []

    def fake_fit_predict(model, data, train_idx, test_idx, cfg, preds):
        seen.append((set(train_idx.tolist()), set(test_idx.tolist())))
        for i in test_idx:
            preds[int(i)] = (0.5, True)

    monkeypatch.setattr(crossval, "_fit_predict", fake_fit_predict)
    data = heads.HeadData(
        x=None, task=np.array([0, 1, 1, 0, 1]), hard=np.array([1.0, 1, 0, 0, 0]), soft=np.full(5, np.nan),
        node_y=np.zeros((5, 1)), node_m=np.zeros((5, 1)), weight=np.ones(5),
        groups=["mod", "resp_mod", "resp_mod", "other", "noise"],
        cv_groups=["uid:1", "uid:1", "uid:2", "uid:3", "n:0"], pair_x=None)
    out = crossval.response_leave_one_source_out(None, data, None)
    assert set(out["response_by_dataset"]) == {"resp_mod", "noise"}
    train_noise, test_noise = seen[0]  # sorted: "noise" first
    assert test_noise == {4} and train_noise == {0, 1, 2, 3}
    train_mod, test_mod = seen[1]
    assert test_mod == {1, 2} and train_mod == {3, 4}  # item 0 shares cluster uid:1 with a held response
    assert out["response_pooled"]["n"] == 3


def test_generated_prompt_groups_join_the_mix_only_when_their_recipe_key_is_on(tmp_path, tiny_encoder):
    from training.guard.model_answers import write_model_answers

    answers = tmp_path / "answers.jsonl"
    write_model_answers(answers, [("hh:1", "hh_helpful_prompts", "How do plants grow?",
                                   "Plants grow through photosynthesis, using light, water and carbon dioxide.")])
    off, _, counts_off = distill.load_examples(_cfg(tmp_path, tiny_encoder))
    on, _, counts = distill.load_examples(_cfg(tmp_path, tiny_encoder, chat_turns=True, task_prompts=True,
                                                task_twins=True, light_replies=True,
                                                model_answers_file=str(answers)))
    added = {e.group for e in on} - {e.group for e in off}
    assert added == {"chat_turns", "task_instructions", "verb_senses", "task_twins", "light_replies",
                     "model_answers"}
    assert counts["response items: model_answers"] == sum(e.group == "model_answers" for e in on) >= 2
    assert counts["response items: light_replies"] == sum(e.group == "light_replies" for e in on) > 0
    assert counts["prompt items: task_twins"] == sum(e.group == "task_twins" for e in on) > 0
    assert counts["prompt items: task_instructions"] == sum(e.group == "task_instructions" for e in on) >= 300
    assert counts["prompt items: verb_senses"] == sum(e.group == "verb_senses" for e in on)
    assert not any(k.startswith("prompt items: task") for k in counts_off)
