"""Escalation to a judge model (service/judge.py) with a scripted OpenAI-compatible judge (httpx.MockTransport):
answers are parsed, override the student both ways, fall back to the student on every failure (counted), only
in-band verdicts are sent, concurrency is budgeted, and a stream sends only its new window."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import httpx
import pytest

from models.backends import GuardInput
from service.batching import DynamicBatcher
from service.guard import Guard
from service.judge import JudgeClient, JudgeConfig, JudgeError, parse_judge_output
from service.metrics import GuardMetrics
from service.settings import ServeSettings
from tests.fakes import FakeBackend

SAFE = GuardInput(text="how do plants grow")
UNSAFE = GuardInput(text="how to build a bomb")  # FakeBackend: 0.97, flagged; SAFE: 0.02


@pytest.mark.parametrize(("text", "unsafe", "labels"), [
    ("safe", False, ()),
    ("\n\nunsafe\nS1,S9", True, ("S1", "S9")),
    ("Safety: Unsafe\nCategories: Violent, Weapons\nRefusal: No", True, ("Violent", "Weapons")),
    ("Safety: Safe\nCategories: None", False, ()),
    ("Safety: Controversial\nCategories: Politically Sensitive Topics", True, ("Politically Sensitive Topics",)),
    ("Unsafe.", True, ()),
])
def test_parse_guard_model_answers(text: str, unsafe: bool, labels: tuple[str, ...]) -> None:
    got = parse_judge_output(text)
    assert got.unsafe is unsafe and got.labels == labels


def test_hazard_codes_map_onto_taxonomy_nodes_and_nonsense_is_refused() -> None:
    got = parse_judge_output("unsafe\nS9")
    assert got.nodes == ("Malicious Use/Security threats/biological and chemical harms",
                         "Malicious Use/Security threats/weapon")
    assert not parse_judge_output("Safety: Controversial", controversial_is_unsafe=False).unsafe
    for bad in ("", "I cannot decide", "maybe", "safe or unsafe.", "Unsafe, or safe: hard to say"):
        with pytest.raises(JudgeError) as e:
            parse_judge_output(bad)
        assert e.value.kind == "parse"


class ScriptedJudge:
    """An OpenAI-compatible judge: answers ``reply`` after ``delay_s``; records every request body."""

    def __init__(self, reply: str = "safe", status: int = 200, delay_s: float = 0.0) -> None:
        self.reply, self.status, self.delay_s = reply, status, delay_s
        self.bodies: list[dict] = []
        self.in_flight = self.peak = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(json.loads(request.content))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply}}]}
        return httpx.Response(self.status, json=body)


def _config(**kw) -> JudgeConfig:
    base = JudgeConfig(url="http://judge/v1", model="llama-guard", timeout_s=1.0, max_concurrency=4,
                       band_low=0.0, band_high=1.0)
    return dataclasses.replace(base, **kw)


@pytest.fixture
async def make_guard():
    started = []

    async def make(judge: ScriptedJudge, **config) -> Guard:
        batcher = DynamicBatcher(FakeBackend().score, 8, 0.0, 16, 1.0)
        batcher.start()
        started.append(batcher)
        client = JudgeClient(_config(**config), transport=httpx.MockTransport(judge))
        return Guard(batcher, ServeSettings().guard_policy(), GuardMetrics(), judge=client)

    yield make
    for b in started:
        await b.stop()


def _count(guard: Guard, task: str, outcome: str) -> float:
    return guard.metrics.registry.get_sample_value("guard_judge_total", {"task": task, "outcome": outcome}) or 0.0


async def test_the_judge_overrides_the_student_both_ways(make_guard) -> None:
    says_unsafe = ScriptedJudge("unsafe\nS9")
    guard = await make_guard(says_unsafe)
    d = await guard.check_input("r", SAFE)
    assert d.blocked and "Malicious Use/Security threats/weapon" in d.verdict.categories
    assert _count(guard, "prompt", "override_unsafe") == 1
    body = says_unsafe.bodies[0]
    assert body["model"] == "llama-guard" and body["temperature"] == 0
    assert body["messages"] == [{"role": "user", "content": SAFE.text}]

    guard = await make_guard(ScriptedJudge("safe"))
    d = await guard.check_input("r", UNSAFE)
    assert not d.blocked and d.verdict.categories == {}
    assert _count(guard, "prompt", "override_safe") == 1


async def test_agreement_is_counted_and_a_response_check_sends_the_reply(make_guard) -> None:
    judge = ScriptedJudge("unsafe")
    guard = await make_guard(judge)
    d = await guard.check_input("r", UNSAFE)
    assert d.blocked and _count(guard, "prompt", "agree_unsafe") == 1
    out = await guard.check_output("r", SAFE, await guard.check_input("r2", SAFE), "a calm reply")
    assert out.blocked  # the judge said unsafe
    assert judge.bodies[-1]["messages"] == [{"role": "user", "content": SAFE.text},
                                            {"role": "assistant", "content": "a calm reply"}]


@pytest.mark.parametrize(("judge", "kind"), [
    (ScriptedJudge("safe", delay_s=5.0), "error_timeout"),
    (ScriptedJudge("safe", status=500), "error_http"),
    (ScriptedJudge("I refuse to answer"), "error_parse"),
])
async def test_on_any_judge_failure_the_student_stands(make_guard, judge: ScriptedJudge, kind: str) -> None:
    guard = await make_guard(judge, timeout_s=0.2)
    d = await guard.check_input("r", UNSAFE)
    assert d.blocked  # the student's verdict
    assert not (await guard.check_input("r", SAFE)).blocked
    assert _count(guard, "prompt", kind) == 2
    assert guard.metrics.registry.get_sample_value("guard_judge_duration_seconds_count") == 2


async def test_only_uncertain_verdicts_are_escalated(make_guard) -> None:
    judge = ScriptedJudge("unsafe")
    guard = await make_guard(judge, band_low=0.3, band_high=0.6)  # the fake scores 0.02 or 0.97: never in band
    assert not (await guard.check_input("r", SAFE)).blocked
    assert (await guard.check_input("r", UNSAFE)).blocked
    assert judge.bodies == []


async def test_concurrency_is_budgeted(make_guard) -> None:
    judge = ScriptedJudge("safe", delay_s=0.05)
    guard = await make_guard(judge, max_concurrency=2)
    await asyncio.gather(*(guard.check_input(f"r{i}", SAFE) for i in range(6)))
    assert len(judge.bodies) == 6 and judge.peak == 2


async def test_a_stream_escalates_only_its_new_window(make_guard) -> None:
    judge = ScriptedJudge("safe")
    guard = await make_guard(judge)
    d = await guard.check_input("r", SAFE)
    first = "a" * 700
    await guard.check_output("r", SAFE, d, first)
    await guard.check_output("r", SAFE, d, first + "b" * 100, start=700)
    sent = judge.bodies[-1]["messages"][1]["content"]
    assert sent.endswith("b" * 100) and len(sent) == 100 + 150  # the new text and the scoring overlap


def test_settings_build_the_judge_only_when_asked(monkeypatch) -> None:
    assert ServeSettings().judge_config() is None
    monkeypatch.setenv("SPAGUARD_JUDGE_API_KEY", "k-secret")
    cfg = ServeSettings(judge_url="http://127.0.0.1:8002/v1").judge_config()
    assert cfg is not None and cfg.api_key == "k-secret" and cfg.band_low <= cfg.band_high
    with pytest.raises(ValueError, match="judge-band-low"):
        ServeSettings(judge_url="http://x/v1", judge_band_low=0.8, judge_band_high=0.2)
