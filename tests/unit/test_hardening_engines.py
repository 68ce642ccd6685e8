"""The engine contract's ``check_request`` (issue 11: a prompt the context cannot hold is refused
before the guard spends anything) and the OpenAI-upstream engine's bounded model discovery.

* fake: its token count (words + 16 per image) against ``max_model_len``;
* openai upstream: ``max_model_len`` from ``/v1/models`` (vLLM lists it), the count from the
  upstream's ``/tokenize``; prompts that cannot fill the context are never sent to be counted;
  an upstream without ``/tokenize`` (404) is asked once, then left to judge prompts itself;
* a hanging upstream with no ``--model``: opening is bounded by ``DISCOVERY_TIMEOUT_S``, the
  engine reports itself down, and learns the model once the upstream answers.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from service.engines import openai_upstream
from service.engines.base import (
    ChatMessage,
    EngineConfig,
    EngineError,
    EngineRequest,
    PromptTooLong,
    text_token_bound,
)
from service.engines.fake import FakeEngineClient
from service.engines.openai_upstream import OpenAIUpstreamEngine
from service.errors import from_engine_error

URL = "http://upstream.test/v1"


def _req(text: str, rid: str = "r1") -> EngineRequest:
    return EngineRequest(rid, (ChatMessage("user", (text,)),))


@pytest.mark.reliability("engine context", "fake engine: prompt at / past its context", "PromptTooLong (400 context_length_exceeded)")
async def test_fake_engine_checks_its_context() -> None:
    engine = FakeEngineClient(max_model_len=8)
    async with engine:
        await engine.check_request(_req("one two three four five six seven"))  # 7 < 8
        with pytest.raises(PromptTooLong) as info:
            await engine.check_request(_req("one two three four five six seven eight"))
        with pytest.raises(PromptTooLong):  # generate refuses it too: the engine stands alone
            async for _ in engine.generate(_req("a b c d e f g h i")):
                pass
    err = from_engine_error(info.value)
    assert (err.status, err.code, err.param) == (400, "context_length_exceeded", "messages")
    assert "8 tokens" in err.message and "one" not in err.message  # counts, never content


def test_text_bound_is_never_below_the_byte_count() -> None:
    msgs = (ChatMessage("user", ("héllo 😀",)),)
    assert text_token_bound(msgs) >= len("héllo 😀".encode())


def _upstream(routes: dict[str, object], calls: list[str]):
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        answer = routes.get(request.url.path)
        if answer is None:
            return httpx.Response(404, json={"error": {"message": "not found"}})
        if callable(answer):
            return answer(request)
        return httpx.Response(200, json=answer)
    return handler


def _openai(handler, **cfg) -> OpenAIUpstreamEngine:
    config = EngineConfig(kind="openai", upstream_url=URL, **cfg)
    return OpenAIUpstreamEngine(config, transport=httpx.MockTransport(handler))


MODELS = {"object": "list", "data": [{"id": "m", "max_model_len": 512}]}


@pytest.mark.reliability("engine context", "openai upstream (vLLM): 64k-character prompt, 512-token model", "PromptTooLong from /tokenize's count, before the guard")
async def test_openai_engine_counts_long_prompts_with_tokenize() -> None:
    calls: list[str] = []
    seen: list[dict] = []

    def tokenize(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        return httpx.Response(200, json={"count": len(body["messages"][0]["content"]) // 4,
                                         "max_model_len": 512, "tokens": []})

    engine = _openai(_upstream({"/v1/models": MODELS, "/tokenize": tokenize}, calls))
    async with engine:
        assert engine.upstream_model == "m" and engine.max_model_len == 512
        await engine.check_request(_req("a short prompt"))  # cannot fill 512 tokens: not counted
        assert "/tokenize" not in calls
        await engine.check_request(_req("x" * 1200))  # might: counted (300 tokens), fits
        with pytest.raises(PromptTooLong):
            await engine.check_request(_req("x" * 64_000))
    assert calls.count("/tokenize") == 2
    assert seen[0]["model"] == "m" and seen[0]["add_generation_prompt"] is True


@pytest.mark.reliability("engine context", "openai upstream without /tokenize", "asked once, then the upstream judges")
async def test_openai_engine_without_tokenize_asks_once() -> None:
    calls: list[str] = []
    engine = _openai(_upstream({"/v1/models": MODELS}, calls), model="m")
    async with engine:
        await engine.check_request(_req("x" * 64_000))  # learns the context, 404 on /tokenize
        await engine.check_request(_req("y" * 64_000))
    assert calls.count("/tokenize") == 1 and calls.count("/v1/models") == 1


@pytest.mark.reliability("engine startup", "--engine openai, hanging upstream, no --model", "start bounded (DISCOVERY_TIMEOUT_S), engine reported down, model learnt later")
async def test_hanging_upstream_does_not_hold_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_upstream, "DISCOVERY_TIMEOUT_S", 0.3)
    hanging = True

    async def handler(request: httpx.Request) -> httpx.Response:
        if hanging:
            await asyncio.sleep(30)  # an upstream that accepts and never answers
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, json=MODELS)

    config = EngineConfig(kind="openai", upstream_url=URL, upstream_timeout_s=120.0)
    engine = OpenAIUpstreamEngine(config, transport=httpx.MockTransport(handler))
    t0 = time.perf_counter()
    async with engine:
        assert time.perf_counter() - t0 < 2.0  # was the full upstream timeout (120 s + retries)
        assert engine.upstream_model is None
        with pytest.raises(EngineError):
            await asyncio.wait_for(engine.check_health(), 1.0)
        hanging = False
        await engine.check_health()  # up now: it learns the model it could not name at start
        assert engine.upstream_model == "m" and engine.model_name == "m"
