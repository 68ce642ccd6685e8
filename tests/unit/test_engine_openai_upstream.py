"""OpenAIUpstreamEngine against an in-process httpx.MockTransport: SSE parsing, request body,
error mapping, abort and health. The real vLLM twin is tests/integration/test_vllm_upstream.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from service.engines import build_engine
from service.engines.base import (
    ChatMessage,
    EngineBadRequest,
    EngineConfig,
    EngineError,
    EngineRequest,
    EngineTimeout,
    EngineUnavailable,
    ImagePart,
    SamplingParams,
)
from service.engines.openai_upstream import OpenAIUpstreamEngine, error_for_status, iter_sse_data

URL = "http://upstream.test/v1"


def _chunk(content: str | None = None, finish: str | None = None, usage: dict | None = None) -> str:
    choices = [] if usage else [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]
    body: dict = {"id": "c1", "object": "chat.completion.chunk", "choices": choices}
    if usage:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n"


GOOD_STREAM = [
    ": keep-alive comment\n\n",
    _chunk(""),  # role-only first chunk: no content
    _chunk("Hel"),
    _chunk("lo"),
    _chunk("!", finish="stop"),
    _chunk(usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}),
    "data: [DONE]\n\n",
]


def _request(rid: str = "r1", **params) -> EngineRequest:
    image = ImagePart(b"\x89PNG fake bytes", "image/png")
    msgs = (ChatMessage("system", ("be brief",)), ChatMessage("user", ("look", image, "here")))
    return EngineRequest(rid, msgs, SamplingParams(**params))


def _engine(handler: Callable[[httpx.Request], object], **cfg) -> OpenAIUpstreamEngine:
    config = EngineConfig(kind="openai", upstream_url=URL, model="up-model", **cfg)
    return OpenAIUpstreamEngine(config, transport=httpx.MockTransport(handler))


async def _stream(parts: list[str], delay: float = 0.0) -> AsyncIterator[bytes]:
    for part in parts:
        if delay:
            await asyncio.sleep(delay)
        yield part.encode()


async def _collect(engine: OpenAIUpstreamEngine, request: EngineRequest) -> list:
    return [out async for out in engine.generate(request)]


async def test_iter_sse_data_handles_multiline_comments_and_missing_final_blank() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": c", "event: x", "data: a", "data:b", "", "", "id: 3", "data: tail"]:
            yield line

    assert [d async for d in iter_sse_data(lines())] == ["a\nb", "tail"]


async def test_stream_passes_deltas_and_final_usage_and_sends_openai_body() -> None:
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == f"{URL}/chat/completions"
        assert request.headers["authorization"] == "Bearer k"
        seen.append(json.loads(request.content))
        return httpx.Response(200, content=_stream(GOOD_STREAM), headers={"content-type": "text/event-stream"})

    async with _engine(handler, upstream_api_key="k") as engine:
        outs = await _collect(engine, _request(max_tokens=5, temperature=0, stop=("\n",), seed=3))
    assert [o.text for o in outs] == ["Hel", "lo", "!"]
    assert [o.finish_reason for o in outs] == [None, None, "stop"]
    assert (outs[-1].prompt_tokens, outs[-1].completion_tokens) == (7, 3)
    body = seen[0]
    assert body["model"] == "up-model" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["max_tokens"], body["temperature"], body["stop"], body["seed"]) == (5, 0, ["\n"], 3)
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    parts = body["messages"][1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"]
    url = parts[1]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == b"\x89PNG fake bytes"


@pytest.mark.parametrize(
    ("status", "expected", "http_status"),
    [(400, EngineBadRequest, 400), (404, EngineBadRequest, 400), (500, EngineError, 502),
     (503, EngineUnavailable, 503), (504, EngineTimeout, 504)],
)  # fmt: skip
async def test_upstream_status_maps_to_engine_error(status: int, expected: type, http_status: int) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": {"message": "max_tokens is too large", "code": status}})

    async with _engine(handler) as engine:
        with pytest.raises(expected) as info:
            await _collect(engine, _request())
    assert type(info.value) is expected and info.value.status == http_status
    assert "max_tokens is too large" in str(info.value)


def test_error_for_status_keeps_plain_bodies_capped() -> None:
    err = error_for_status(502, "x" * 5000)
    assert type(err) is EngineError and len(str(err)) < 600


@pytest.mark.parametrize(
    ("exc", "expected"),
    [(httpx.ConnectError("refused"), EngineUnavailable), (httpx.ReadTimeout("slow"), EngineTimeout),
     (httpx.RemoteProtocolError("peer closed"), EngineError)],
)  # fmt: skip
async def test_transport_failures_map_to_engine_errors(exc: Exception, expected: type) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    async with _engine(handler) as engine:
        with pytest.raises(expected):
            await _collect(engine, _request())


@pytest.mark.parametrize(
    "parts",
    [[_chunk("a"), 'data: {"error": {"message": "engine died"}}\n\n'],  # error event mid-stream
     [_chunk("a"), "data: {not json\n\n"],
     [_chunk("a"), "data: [DONE]\n\n"]],  # ended without finish_reason
)  # fmt: skip
async def test_broken_streams_raise_engine_error(parts: list[str]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=_stream(parts))

    async with _engine(handler) as engine:
        with pytest.raises(EngineError) as info:
            await _collect(engine, _request())
    assert type(info.value) is EngineError


async def test_abort_closes_the_upstream_stream_and_ends_quietly() -> None:
    closed = asyncio.Event()

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            while True:
                yield _chunk("tok ").encode()
                await asyncio.sleep(0.01)

        async def aclose(self) -> None:  # httpx calls this when the response is closed
            closed.set()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=Endless())

    async with _engine(handler) as engine:
        outs = []
        async for out in engine.generate(_request("r-abort")):
            outs.append(out)
            if len(outs) == 3:
                await engine.abort("r-abort")
        await asyncio.wait_for(closed.wait(), 2)
        await engine.abort("r-abort")  # aborting a finished id is a no-op
    assert len(outs) == 3 and all(o.finish_reason is None for o in outs)


async def test_consumer_leaving_early_closes_the_upstream_stream() -> None:
    closed = asyncio.Event()

    class Slow(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            for _ in range(1000):
                yield _chunk("tok ").encode()
                await asyncio.sleep(0.01)

        async def aclose(self) -> None:
            closed.set()

    async with _engine(lambda request: httpx.Response(200, stream=Slow())) as engine:
        gen = engine.generate(_request("r-leave"))
        assert (await anext(gen)).text == "tok "
        await gen.aclose()  # what a client disconnect does to the serving layer's iterator
        assert closed.is_set()


async def test_model_is_discovered_when_not_configured() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served-x"}]})
        assert json.loads(request.content)["model"] == "served-x"
        return httpx.Response(200, content=_stream(GOOD_STREAM))

    config = EngineConfig(kind="openai", upstream_url="http://upstream.test/")  # no /v1: appended
    async with OpenAIUpstreamEngine(config, transport=httpx.MockTransport(handler)) as engine:
        assert engine.model_name == "served-x" and engine.random_weights is False
        assert "".join(o.text for o in await _collect(engine, _request())) == "Hello!"


async def test_health_uses_health_then_falls_back_to_models() -> None:
    paths: list[str] = []
    state = {"health": 200}

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path == "/health":
            return httpx.Response(state["health"])
        return httpx.Response(200, json={"data": [{"id": "m"}]})

    async with _engine(handler) as engine:
        await engine.check_health()
        state["health"] = 404
        await engine.check_health()
        state["health"] = 500
        with pytest.raises(EngineUnavailable):
            await engine.check_health()
    assert paths == ["/health", "/health", "/v1/models", "/health"]


async def test_health_and_generate_when_upstream_is_down() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    engine = build_engine(EngineConfig(kind="openai", upstream_url=URL, model="m"))
    engine._transport = httpx.MockTransport(handler)  # type: ignore[attr-defined]
    async with engine:
        with pytest.raises(EngineUnavailable):
            await engine.check_health()
        with pytest.raises(EngineUnavailable):
            await _collect(engine, _request())  # type: ignore[arg-type]
    with pytest.raises(EngineUnavailable, match="not open"):
        await engine.check_health()


def test_missing_upstream_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="upstream_url"):
        OpenAIUpstreamEngine(EngineConfig(kind="openai"))
