"""Hypothesis properties of the SSE framer, alone and through the whole streamed pipeline.

* ``sse``/``sse_error``: any text (newlines, CR, ``data:``, ``[DONE]``, astral characters) frames
  as exactly one ``data:`` line and a blank line, and the upstream parser
  (``openai_upstream.iter_sse_data``) reads back exactly what was framed.
* A streamed chat of arbitrary engine chunks: the first event carries the role, the content
  concatenates to the engine's text (nothing held back is lost), the finish reason comes once,
  and the last event is ``data: [DONE]``; an engine dying after its chunks ends in one error
  event, then ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.engines.fake import FakeEngineClient
from service.engines.openai_upstream import iter_sse_data
from service.errors import GatewayTimeout
from service.protocol import ChatCompletionStreamChoice, ChatCompletionStreamResponse, DeltaMessage
from service.serving.sse import DONE, sse, sse_error
from tests.fakes import FakeBackend
from tests.hardening import chat, serve

# Valid Unicode only (what the protocol admits): no lone surrogates.
_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


async def _lines(chunks: list[str]) -> list[str]:
    async def gen():
        for c in chunks:
            for line in c.split("\n"):
                yield line
    return [x async for x in iter_sse_data(gen())]


@pytest.mark.reliability("SSE framing", "property: any delta text round-trips one data: event", "exactly one event, same text")
@settings(max_examples=200, deadline=None)
@given(content=_text, finish=st.sampled_from([None, "stop", "length", "content_filter"]))
def test_sse_frames_any_text_as_one_event(content: str, finish: str | None) -> None:
    chunk = ChatCompletionStreamResponse(
        id="c1", created=1, model="m",
        choices=[ChatCompletionStreamChoice(delta=DeltaMessage(content=content), finish_reason=finish)],
    )
    event = sse(chunk)
    assert event.startswith("data: ") and event.endswith("\n\n") and event.count("\n") == 2
    (data,) = asyncio.run(_lines([event]))
    parsed = json.loads(data)
    assert parsed["choices"][0]["delta"]["content"] == content
    assert parsed["choices"][0]["finish_reason"] == finish


@pytest.mark.reliability("SSE framing", "property: error events", "one data: event with the envelope")
@settings(max_examples=100, deadline=None)
@given(message=_text.filter(bool))
def test_error_events_are_one_event(message: str) -> None:
    event = sse_error(GatewayTimeout(message))
    assert event.startswith("data: ") and event.count("\n") == 2
    (data,) = asyncio.run(_lines([event]))
    assert set(json.loads(data)["error"]) == {"message", "type", "param", "code"}


def _events(body: str) -> list[str]:
    assert body.endswith(DONE), body[-200:]
    return [e for e in body.split("\n\n") if e]


class _LiveApp:
    """One in-process app on its own event loop for every example (an app start costs ~1 s)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.engine = FakeEngineClient.from_script({"model_name": "fake-vlm"})
        self._cm = serve(backend=FakeBackend(triggers=()), engine=self.engine)
        self.client = self.loop.run_until_complete(self._cm.__aenter__())

    def stream(self, chunks: list[str], holdback: int, die: bool) -> list[str]:
        rule = {"match": "go", "chunks": chunks}
        if die:
            rule |= {"error": "engine died", "error_status": 503}
        self.engine.responses = FakeEngineClient.from_script({"responses": [rule]}).responses
        # The hold-back window is the guard's policy: set it per example on the running app.
        guard = self.client.app.state.serving_chat.guard
        guard.policy = dataclasses.replace(guard.policy, stream_holdback_chars=holdback)

        async def go() -> list[str]:
            r = await self.client.post("/v1/chat/completions", json=chat("go", stream=True))
            assert r.status_code == 200
            return _events(r.text)

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self._cm.__aexit__(None, None, None))
        self.loop.close()


@pytest.fixture(scope="module")
def live_app() -> Iterator[_LiveApp]:
    app = _LiveApp()
    yield app
    app.close()


@pytest.mark.reliability("SSE framing", "property: streamed chat of arbitrary chunks, engine dying or not", "role first, all text once, [DONE] last")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(_text, min_size=1, max_size=8), holdback=st.integers(1, 40), die=st.booleans())
def test_streamed_chat_frames_every_chunk(
    live_app: _LiveApp, chunks: list[str], holdback: int, die: bool
) -> None:
    events = live_app.stream(chunks, holdback, die)
    assert events[-1] == DONE.strip()
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    if die:
        assert "error" in payloads[-1] and payloads[-1]["error"]["code"] == "engine_unavailable"
        assert sum("error" in p for p in payloads) == 1
        return
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads[1:] if p["choices"])
    assert text == "".join(chunks)
    finishes = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert [f for f in finishes if f] == ["stop"]
    assert all("error" not in p for p in payloads)
