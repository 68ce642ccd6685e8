"""ServingChat with FakeEngineClient: SSE framing, [DONE] after errors and blocks, aborts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from types import SimpleNamespace
from collections.abc import AsyncIterator

import pytest

from service.batching import DynamicBatcher
from service.engines.fake import FakeEngineClient
from service.errors import ClientDisconnected, ContentFiltered, GatewayTimeout
from service.guard import REFUSAL_MESSAGE, Guard
from service.metrics import GuardMetrics
from service.protocol import ChatCompletionRequest
from service.serving.chat import ServingChat
from service.settings import ServeSettings
from tests.fakes import FakeBackend

SCRIPT = {
    "model_name": "fake-vlm",
    "responses": [
        {"match": "poem", "chunks": ["Roses ", "are ", "red."]},
        {"match": "chem", "chunks": ["Step one: ", "add the ", "poison ", "to ", "the cup."]},
        {"match": "boom", "error": "scripted engine failure"},
        {"match": "slow", "chunks": ["a", "b", "c", "d"]},
    ],
}


@pytest.fixture
async def make_serving() -> AsyncIterator:
    cleanup: list = []

    async def make(timeout_s: float = 5.0, delay: float = 0.0, **policy) -> ServingChat:
        engine = FakeEngineClient.from_script({**SCRIPT, "chunk_delay_s": delay})
        await engine.__aenter__()
        batcher = DynamicBatcher(FakeBackend().score, 8, 0.0, 16, 1.0)
        batcher.start()
        cleanup.append(batcher)
        policy.setdefault("stream_holdback_chars", 8)
        guard = Guard(batcher, dataclasses.replace(ServeSettings().guard_policy(), **policy),
                      GuardMetrics())
        return ServingChat(engine, guard, guard.metrics, "fake-vlm", timeout_s)

    yield make
    for b in cleanup:
        await b.stop()


def _req(text: str, stream: bool = True, **kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(messages=[{"role": "user", "content": text}], stream=stream, **kw)


async def _events(serving: ServingChat, req: ChatCompletionRequest) -> list:
    result = await serving.create_chat_completion(req)
    assert result.stream is not None and result.body is None
    lines = [line async for line in result.stream]
    assert all(line.startswith("data: ") and line.endswith("\n\n") for line in lines)
    assert lines[-1] == "data: [DONE]\n\n"  # always last
    return [json.loads(line[6:]) for line in lines[:-1]]


def _content(events: list) -> str:
    return "".join(c["delta"].get("content", "") for e in events for c in e.get("choices", []))


async def test_stream_framing_role_content_finish_usage(make_serving) -> None:
    serving = await make_serving()
    events = await _events(serving, _req("a poem", stream_options={"include_usage": True}))
    first, *middle, final, usage = events
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["choices"][0]["finish_reason"] is None
    assert _content(events) == "Roses are red."
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 3
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 3
    assert len({e["id"] for e in events}) == 1 and "usage" not in final


async def test_done_after_injected_engine_error(make_serving) -> None:
    serving = await make_serving()
    events = await _events(serving, _req("boom"))
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    error = events[-1]["error"]
    assert error["code"] == "engine_error" and error["type"] == "upstream_error"
    assert "boom" not in json.dumps(events)  # no request content in errors


async def test_content_filter_block_mid_stream(make_serving) -> None:
    serving = await make_serving(mode="block")
    result = await serving.create_chat_completion(_req("chem"))
    lines = [line async for line in result.stream]
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert lines[-1] == "data: [DONE]\n\n"
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"
    released = _content(events)
    assert "poison" not in released and released.startswith("Step one:")
    engine = serving.engine
    assert isinstance(engine, FakeEngineClient) and engine.aborted == [result.headers["x-request-id"]]


async def test_shadow_mode_streams_everything(make_serving) -> None:
    serving = await make_serving(mode="shadow")
    events = await _events(serving, _req("chem"))
    assert _content(events) == "Step one: add the poison to the cup."
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


async def test_annotate_mode_puts_safety_on_final_chunk(make_serving) -> None:
    serving = await make_serving(mode="annotate")
    events = await _events(serving, _req("chem"))
    safety = events[-1]["safety"]
    assert safety["action"] == "annotate" and safety["response"]["flagged"] is True
    assert safety["response"]["categories"] == {"Violence": 0.97}


async def test_blocked_prompt_stream_is_a_refusal(make_serving) -> None:
    serving = await make_serving(mode="block", block_style="refusal")
    events = await _events(serving, _req("how to make a bomb", stream_options={"include_usage": True}))
    assert _content(events) == REFUSAL_MESSAGE
    assert events[-2]["choices"][0]["finish_reason"] == "content_filter"
    assert serving.engine.requests == []  # no generation at all


async def test_blocked_prompt_error_style_raises_before_stream(make_serving) -> None:
    serving = await make_serving(mode="block", block_style="error")
    with pytest.raises(ContentFiltered) as e:
        await serving.create_chat_completion(_req("a bomb"))
    assert e.value.status == 400 and e.value.code == "content_filter"


async def test_nonstream_response_block_refusal(make_serving) -> None:
    serving = await make_serving(mode="block")
    result = await serving.create_chat_completion(_req("chem", stream=False))
    assert result.body is not None
    choice = result.body.choices[0]
    assert choice.finish_reason == "content_filter" and choice.message.content == REFUSAL_MESSAGE


async def test_client_disconnect_mid_stream_aborts_engine(make_serving) -> None:
    serving = await make_serving(delay=0.05, stream_holdback_chars=1)
    result = await serving.create_chat_completion(_req("slow"))
    stream = result.stream
    await stream.__anext__()  # role chunk
    await stream.__anext__()  # first content chunk
    await stream.aclose()  # the client went away
    assert serving.engine.aborted == [result.headers["x-request-id"]]


async def test_stream_timeout_sends_error_then_done(make_serving) -> None:
    serving = await make_serving(timeout_s=0.1, delay=0.08, stream_holdback_chars=1)
    events = await _events(serving, _req("slow"))
    assert events[-1]["error"]["code"] == "generation_timeout"
    assert len(serving.engine.aborted) == 1


class _DisconnectingRequest:
    """A stand-in for starlette's Request whose client leaves after ``after_s``."""

    def __init__(self, after_s: float) -> None:
        self.after_s = after_s
        self.state = SimpleNamespace()

    async def receive(self) -> dict:
        await asyncio.sleep(self.after_s)
        return {"type": "http.disconnect"}


async def test_nonstream_disconnect_cancels_and_aborts(make_serving) -> None:
    serving = await make_serving(delay=0.1)
    with pytest.raises(ClientDisconnected):
        await serving.create_chat_completion(_req("slow", stream=False), _DisconnectingRequest(0.05))
    assert len(serving.engine.aborted) == 1


async def test_nonstream_timeout_is_504(make_serving) -> None:
    serving = await make_serving(timeout_s=0.05, delay=0.1)
    with pytest.raises(GatewayTimeout) as e:
        await serving.create_chat_completion(_req("slow", stream=False))
    assert e.value.status == 504 and len(serving.engine.aborted) == 1
