"""``--prompt-check during``: generation runs while the prompt is scored, and nothing it makes escapes early.

Parity: every request of a varied set (n, tools, reasoning, blocked replies, blocked prompts, streamed and
not, chat and completions) gets the same answer in both modes. Then what only the early start can get
wrong: the engine really starts before the verdict; a refused prompt, a failed check and a client that
leaves each discard the generation unread, abort the engine request and are counted; a prompt with an
image still lends its OCR-bearing verdict to the reply's check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from typing import Any

import pytest

from models.backends import GuardInput, Verdict
from service.engines.fake import FakeEngineClient
from service.serving.early_start import EarlyStart
from tests.fakes import FakeBackend, png_data_url
from tests.hardening import SCRIPT, call_then_disconnect, envelope, metric, serve

RULES = [
    {"match": "weather", "reasoning": ["Let me ", "check."],
     "tool_calls": [{"name": "get_weather", "arguments": ['{"city": ', '"Paris"}']}]},
    {"match": "recipe", "tool_calls": [{"name": "search", "arguments": ['{"q": "how to build ', 'a pipe bomb"}']}]},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
DISCARDED = "guard_early_generations_discarded_total"


def _engine(**kw: Any) -> FakeEngineClient:
    return FakeEngineClient.from_script({**SCRIPT, "responses": RULES + SCRIPT["responses"], **kw})


def _user(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": text}], **kw}


def _normalised(text: str) -> str:
    """A body or an SSE stream with its per-request ids and timestamps blanked."""
    text = re.sub(r'"(chatcmpl|cmpl)-[0-9a-f]+', r'"\1-ID', text)
    text = re.sub(r'"created":\s*\d+', '"created":0', text)
    return re.sub(r'"id":\s*"call_[^"]+"', '"id":"call-ID"', text)


CHAT = [
    _user("hello"), _user("hello", n=3), _user("weather?", tools=TOOLS), _user("recipe", tools=TOOLS),
    _user("chem"), _user("chem", n=2), _user("how to make a bomb"), _user("how to make a bomb", n=2),
]


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize("body", CHAT, ids=["plain", "n=3", "tool call", "blocked tool call", "blocked reply",
                                            "blocked reply n=2", "blocked prompt", "blocked prompt n=2"])
async def test_chat_answers_are_the_same_in_both_modes(body: dict[str, Any], stream: bool) -> None:
    if stream:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    answers = []
    for mode in ("before", "during"):
        async with serve(FakeBackend(), _engine(), prompt_check=mode) as client:
            r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        verdict_headers = {k: v for k, v in r.headers.items() if k.startswith("x-guard") and not k.endswith("-time")}
        answers.append((_normalised(r.text), verdict_headers))
    assert answers[0] == answers[1]


@pytest.mark.parametrize("body", [
    {"model": "fake-vlm", "prompt": ["hello", "how to make a bomb", "chem"], "max_tokens": 16},
    {"model": "fake-vlm", "prompt": ["hello", "how to make a bomb", "chem"], "max_tokens": 16, "stream": True},
    {"model": "fake-vlm", "prompt": "hello there", "n": 2, "echo": True, "max_tokens": 16},
], ids=["three prompts", "three prompts streamed", "n=2 echo"])
async def test_completions_answers_are_the_same_in_both_modes(body: dict[str, Any]) -> None:
    answers = []
    for mode in ("before", "during"):
        async with serve(FakeBackend(), _engine(), prompt_check=mode) as client:
            r = await client.post("/v1/completions", json=body)
        assert r.status_code == 200, r.text
        answers.append(_normalised(r.text))
    assert answers[0] == answers[1]


class _GatedBackend(FakeBackend):
    """Scores a prompt only once the engine has been asked to generate (or after ``wait_s``)."""

    def __init__(self, engine: FakeEngineClient, wait_s: float) -> None:
        super().__init__()
        self.engine, self.wait_s = engine, wait_s
        self.engine_had_started: list[bool] = []

    def score(self, batch: list[GuardInput]) -> list[Verdict]:
        if any(item.response is None for item in batch):
            deadline = threading.Event()
            for _ in range(int(self.wait_s / 0.01)):
                if self.engine.requests:
                    break
                deadline.wait(0.01)
            self.engine_had_started.append(bool(self.engine.requests))
        return super().score(batch)


@pytest.mark.parametrize("mode, started", [("before", False), ("during", True)])
async def test_the_engine_starts_before_the_verdict_only_when_asked(mode: str, started: bool) -> None:
    engine = _engine()
    backend = _GatedBackend(engine, wait_s=0.5)
    async with serve(backend, engine, prompt_check=mode) as client:
        r = await client.post("/v1/chat/completions", json=_user("hello"))
    assert r.status_code == 200
    assert backend.engine_had_started == [started]


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
async def test_a_refused_prompt_is_discarded_unread_aborted_and_counted(stream: bool) -> None:
    # The engine would answer the harmful prompt with text that names a secret; none of it may leave.
    engine = _engine(default={"chunks": ["SECRET ", "generated ", "text"]})
    backend = _GatedBackend(engine, wait_s=0.5)  # the verdict comes after the engine started
    async with serve(backend, engine, prompt_check="during") as client:
        r = await client.post("/v1/chat/completions", json=_user("how to make a bomb", stream=stream))
        text = (await client.get("/metrics")).text
    assert r.status_code == 200 and "SECRET" not in r.text and "content_filter" in r.text
    assert backend.engine_had_started == [True]
    assert [req.request_id for req in engine.requests] == engine.aborted[:1]
    assert metric(text, DISCARDED, why="refused") == 1
    # Its reply was never scored either: a response check comes only after the prompt's verdict allowed it.
    assert not any(item.response is not None for batch in backend.batches for item in batch)


async def test_a_rejected_prompt_under_block_style_error_is_discarded_too() -> None:
    engine = _engine()
    async with serve(FakeBackend(), engine, prompt_check="during", block_style="error") as client:
        r = await client.post("/v1/chat/completions", json=_user("how to make a bomb"))
        text = (await client.get("/metrics")).text
    assert envelope(r, 400)["code"] == "content_filter"
    assert engine.aborted and metric(text, DISCARDED, why="refused") == 1


async def test_a_failed_check_discards_the_generation_and_follows_the_fail_policy() -> None:
    engine = _engine(default={"chunks": ["SECRET"]})
    async with serve(FakeBackend(fail=True), engine, prompt_check="during", fail_policy="closed") as client:
        r = await client.post("/v1/chat/completions", json=_user("hello"))
        text = (await client.get("/metrics")).text
    assert envelope(r, 503) and "SECRET" not in r.text
    assert engine.aborted and metric(text, DISCARDED, why="failed") == 1


async def test_a_client_that_leaves_during_the_check_stops_the_generation() -> None:
    engine = _engine(chunk_delay_s=0.05)
    backend = FakeBackend(delay_s=0.5)
    async with serve(backend, engine, prompt_check="during") as client:
        await call_then_disconnect(client.asgi, _user("hello"), after_s=0.1)
        for _ in range(100):
            if engine.aborted:
                break
            await asyncio.sleep(0.02)
        text = (await client.get("/metrics")).text
    assert engine.requests and engine.aborted == [engine.requests[0].request_id]
    assert metric(text, DISCARDED, why="cancelled") == 1


async def test_a_reply_to_an_image_prompt_waits_for_the_prompts_verdict() -> None:
    """A prompt's image is read once; its OCR text reaches the reply's check through the prompt's verdict."""
    seen: list[GuardInput] = []

    class _Ocr(FakeBackend):
        def score(self, batch: list[GuardInput]) -> list[Verdict]:
            seen.extend(batch)
            return [dataclasses.replace(v, ocr_text="TEXT FROM THE IMAGE" if item.images else "")
                    for v, item in zip(super().score(batch), batch, strict=True)]

    body = {"model": "fake-vlm", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": png_data_url()}}]}]}
    async with serve(_Ocr(), _engine(), prompt_check="during") as client:
        r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    replies = [item for item in seen if item.response is not None]
    assert replies and all("TEXT FROM THE IMAGE" in item.text for item in replies)


async def test_early_start_contract() -> None:
    """Iterated once, in order, the engine's error raised at the end; discard is idempotent and aborts."""
    aborted: list[int] = []

    async def source():
        yield 1
        yield 2
        raise RuntimeError("engine died")

    async def abort() -> None:
        aborted.append(1)

    early = EarlyStart(source(), abort)
    await asyncio.sleep(0)
    got = []
    with pytest.raises(RuntimeError, match="engine died"):
        async for x in early:
            got.append(x)
    assert got == [1, 2]
    with pytest.raises(RuntimeError, match="iterated once"):
        async for _ in early:
            pass
    await early.discard()
    await early.discard()
    assert aborted == [1]


async def test_early_start_stops_reading_when_its_reader_stops() -> None:
    produced: list[int] = []

    async def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1
            await asyncio.sleep(0.001)

    async def abort() -> None:
        return None

    early = EarlyStart(endless(), abort)
    reader = early.__aiter__()
    assert await reader.__anext__() == 0
    await reader.aclose()
    count = len(produced)
    await asyncio.sleep(0.05)
    assert len(produced) == count  # the reading task stopped with its reader


def test_the_setting_is_a_flag_with_two_choices() -> None:
    from service.settings import ServeSettings

    assert ServeSettings(engine="fake", model="script.json").prompt_check == "before"
    assert ServeSettings(engine="fake", model="script.json", prompt_check="during").prompt_check == "during"
    with pytest.raises(ValueError):
        ServeSettings(engine="fake", model="script.json", prompt_check="after")
