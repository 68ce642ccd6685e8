"""Reward model (pairwise loss on the fixture), the eval-harm command on the fixture, and the
whole smoke-train pipeline (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.backends import GuardInput, Verdict
from training.align import eval_harm, reward
from training.align.data import fixtures


CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from models.vlm import save_tiny_vlm

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("align_reward")
    fixtures.write_parquet(root / "train.parquet", n=24, seed=0)
    fixtures.write_test_parquet(root / "harm.parquet", n=6, seed=1)
    save_tiny_vlm(root / "llava", "llava", 0)
    return root


@pytest.fixture(scope="module")
def reward_dir(assets):
    out = assets / "reward"
    argv = ["--config", str(CONFIGS / "tiny_llava_reward_cpu.yaml"), "--data_files", str(assets / "train.parquet"),
            "--model_name_or_path", str(assets / "llava"), "--output_dir", str(out)]
    assert reward.main(argv) == 0
    return out


def test_pairwise_loss_matches_bradley_terry():
    loss, acc, margin = reward.pairwise_loss(torch.tensor([2.0, 0.0, 0.0, 1.0]))  # chosen, then rejected
    expected = -(torch.nn.functional.logsigmoid(torch.tensor(2.0)) + torch.nn.functional.logsigmoid(
        torch.tensor(-1.0))) / 2
    assert loss.item() == pytest.approx(expected.item()) and acc.item() == 0.5 and margin.item() == 0.5


def test_reward_model_learns_the_preference_and_reloads(reward_dir, assets):
    card = json.loads((reward_dir / "reward_card.json").read_text())
    assert card["pairwise_accuracy"] > 0.5 and card["loss_last"] < card["loss_first"]
    assert card["mean_reward_chosen"] > card["mean_reward_rejected"]
    model, processor, loaded = reward.load_reward_model(reward_dir, device="cpu")
    assert loaded == card and isinstance(model, reward.VLMRewardModel)


def test_reward_config_rejects_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        reward.RewardJobConfig(model_name_or_path="x", dtype="int8")


def test_eval_harm_command_runs_on_the_fixture(assets, reward_dir, tmp_path):
    argv = ["--spa-vl-parquet", str(assets / "harm.parquet"), "--model", f"base={assets / 'llava'}",
            "--model", f"again={assets / 'llava'}", "--reward-model", str(reward_dir),
            "--max-new-tokens", "8", "--out", str(tmp_path)]
    assert eval_harm.main(argv) == 0
    results = json.loads((tmp_path / "harm_eval.json").read_text())
    assert set(results) == {"base", "again"} and results["base"]["n"] == 6
    # greedy decoding of the same checkpoint twice → identical answers and rates
    assert results["base"] == results["again"]
    assert set(results["base"]["per_category"]) == {c[0] for c in fixtures.classes()}
    assert "| **unsafe rate (all)** |" in (tmp_path / "harm_eval.md").read_text()
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == 12


def test_unsafe_rates_per_category_are_hand_checked():
    rows = [{"category": "a"}, {"category": "a"}, {"category": "b"}, {"category": "a"}]
    got = eval_harm.unsafe_rates(rows, [True, False, True, True])
    assert got == {"n": 4, "unsafe_rate": 0.75, "per_category": {"a": 2 / 3, "b": 1.0}}


def test_a_scorer_returning_too_few_verdicts_fails_loudly():
    items = [GuardInput(text="q", response="r")] * 3
    with pytest.raises(RuntimeError, match="2 verdicts for 3"):
        eval_harm.score_in_batches(lambda b: [Verdict("response", 0.1, False)] * 2, items)


def test_model_spec_needs_name_and_path():
    with pytest.raises(SystemExit, match="NAME=PATH"):
        eval_harm._models(["just_a_path"])


@pytest.mark.slow
def test_smoke_train_writes_the_summary(tmp_path):
    from training import smoke

    out = tmp_path / "smoke"
    assert smoke.main(["--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dpo"]["loss_last"] < summary["dpo"]["loss_first"]
    assert summary["dpo"]["reward_accuracy_last"] > 0.5
    assert summary["reward_model"]["pairwise_accuracy"] > 0.5
    assert 0.0 <= summary["distill"]["agreement_with_teacher"] <= 1.0
    assert summary["distill"]["agreement_with_teacher"] > 0.5
    for key in ("base_unsafe_rate", "aligned_unsafe_rate"):
        assert 0.0 <= summary["eval"][key] <= 1.0
    assert summary["seconds"]["total"] < 600


def test_grpo_trains_a_vlm_against_the_image_conditioned_reward(assets, reward_dir, tmp_path, monkeypatch):
    from training.align import rl

    seen: list[int] = []
    original = rl.VLMRewardFunction.__call__

    def spy(self, prompts, completions, images=None, **kwargs):
        seen.extend(len(i) for i in images)  # one image per SPA-VL prompt must reach the reward
        return original(self, prompts, completions, images=images, **kwargs)

    monkeypatch.setattr(rl.VLMRewardFunction, "__call__", spy)
    argv = ["--config", str(CONFIGS / "tiny_llava_grpo_cpu.yaml"), "--data_files", str(assets / "train.parquet"),
            "--model_name_or_path", str(assets / "llava"), "--reward_model_path", str(reward_dir),
            "--output_dir", str(tmp_path)]
    assert rl.main(argv) == 0
    logs = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/vlm_reward/mean" in r for r in logs)
    assert seen and set(seen) == {1}
    assert (tmp_path / "final").is_dir()


def test_rl_job_needs_a_reward_model():
    from training.align import rl

    with pytest.raises(ValueError, match="reward_model_path"):
        rl.RLJobArgs()


def test_openai_compatible_generation_sends_the_image_and_reads_the_answer():
    import httpx

    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"object": "list", "data": [
                {"id": "served-llava", "object": "model", "created": 0, "owned_by": "vllm"}]})
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": f" I refuse #{len(seen)} "}}]})

    from PIL import Image

    rows = [{"question": "q1", "images": [Image.new("RGB", (8, 8))]}, {"question": "q2", "images": []}]
    client = httpx.Client(transport=httpx.MockTransport(handler))
    answers = eval_harm.generate_openai("http://vllm.test/v1", rows, 16, http_client=client, concurrency=1)
    assert answers == ["I refuse #1", "I refuse #2"]
    first = seen[0]
    assert first["model"] == "served-llava" and first["max_tokens"] == 16 and first["temperature"] == 0.0
    parts = first["messages"][0]["content"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,") and parts[1]["text"] == "q1"
    assert len(seen[1]["messages"][0]["content"]) == 1  # no image → text only


def test_judge_rate_is_reported_next_to_the_classifier_rate(assets):
    class FakeJudge:  # the training.guard.teachers.JudgeClient surface eval_harm uses
        def __init__(self):
            self.calls = 0

        def judge(self, prompt, response):
            self.calls += 1
            return type("J", (), {"unsafe": self.calls % 2 == 1})()

    rows = [{"id": str(i), "question": f"q{i}", "images": [], "category": "c"} for i in range(4)]
    judge = FakeJudge()
    results, records = eval_harm.evaluate(
        {"base": str(assets / "llava")}, rows, lambda items: [Verdict("response", 0.9, True)] * len(items),
        max_new_tokens=4, batch_size=2, judge=judge)
    assert results["base"]["unsafe_rate"] == 1.0 and results["base"]["judge_unsafe_rate"] == 0.5
    assert judge.calls == 4 and len(records) == 4


@pytest.mark.slow  # ~20-30 s: gradient checkpointing on CPU
def test_lora_reward_model_merges_on_save_and_scores_the_same_after_reload(assets, tmp_path):
    from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

    from training.align.data import spa_vl

    out = tmp_path / "reward_lora"
    argv = ["--config", str(CONFIGS / "tiny_llava_reward_lora_cpu.yaml"), "--data_files",
            str(assets / "train.parquet"), "--model_name_or_path", str(assets / "llava"), "--output_dir", str(out),
            "--max_steps", "3"]
    assert reward.main(argv) == 0
    card = json.loads((out / "reward_card.json").read_text())
    model, processor, _ = reward.load_reward_model(out, device="cpu")
    assert not any("lora" in n for n, _ in model.named_parameters())  # merged, plain backbone
    rows = list(spa_vl.convert(spa_vl.parquet_rows(str(assets / "train.parquet"))))
    chosen, _ = reward.score_pairs(model, DataCollatorForVisionPreference(processor=processor), rows)
    assert sum(chosen) / len(chosen) == pytest.approx(card["mean_reward_chosen"], abs=1e-4)


def test_reward_lora_needs_a_trainable_backbone():
    with pytest.raises(ValueError, match="LoRA needs train_backbone"):
        reward.RewardJobConfig(model_name_or_path="x", lora_r=4, train_backbone=False)
