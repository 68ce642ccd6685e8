"""The openai engine in front of a scripted upstream (a real HTTP server in this process), driven by the
official ``openai`` client through the guard (issue 14, items 1, 2, 3, 5 and 7).

The upstream streams what a model may write besides content: tool calls (their arguments in pieces),
``reasoning_content``, ``refusal``, several choices, logprobs. Harm in any of them is blocked (the fake
classifier flags "bomb" and "poison"); benign ones come back in OpenAI's shape, streamed and not, and
every body validates against the ``openai`` package's types. Every optional parameter the client sets
reaches the upstream; an unknown vendor field does not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest

from service.engines.base import EngineConfig
from service.engines.openai_upstream import OpenAIUpstreamEngine
from service.guard import REFUSAL_MESSAGE
from tests.fakes import FakeBackend
from tests.hardening import make_app
from tests.openai_conformance import check_chat, check_chunk, check_error, sse_events

from asgi_lifespan import LifespanManager

TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the web.",
    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]


def _choice(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}


def _tool(k: int, arguments: str, name: str | None = None, call_id: str | None = None) -> dict[str, Any]:
    piece: dict[str, Any] = {"index": k, "function": {"arguments": arguments}}
    if name is not None:
        piece |= {"id": call_id or f"call_up{k}", "type": "function"}
        piece["function"]["name"] = name
    return piece


def _script(text: str) -> list[list[dict[str, Any]]]:
    """The upstream's chunks (each a list of choices) for a prompt whose last message holds ``text``."""
    if "weather" in text:
        return [[_choice(0, {"role": "assistant", "content": None})],
                [_choice(0, {"tool_calls": [_tool(0, '{"q": ', name="search")]})],
                [_choice(0, {"tool_calls": [_tool(0, '"weather in Paris"}')]})],
                [_choice(0, {}, "tool_calls")]]
    if "recipe" in text:  # harmful arguments, streamed in pieces
        return [[_choice(0, {"tool_calls": [_tool(0, '{"q": "how to ', name="search")]})],
                [_choice(0, {"tool_calls": [_tool(0, "build a pipe ")]})],
                [_choice(0, {"tool_calls": [_tool(0, 'bomb at home"}')]})],
                [_choice(0, {}, "tool_calls")]]
    if "think" in text:  # harmful reasoning, benign content
        return [[_choice(0, {"reasoning_content": "First I will explain "})],
                [_choice(0, {"reasoning_content": "how to add the poison."})],
                [_choice(0, {"content": "Here you go."})], [_choice(0, {}, "stop")]]
    if "refuse" in text:
        return [[_choice(0, {"refusal": "I can't help with that."})], [_choice(0, {}, "stop")]]
    if "nasty" in text:
        return [[_choice(0, {"refusal": "No, but slip the poison "})], [_choice(0, {"refusal": "into the cup."})],
                [_choice(0, {}, "stop")]]
    if "two" in text:  # n=2: choice 1 is harmful
        return [[_choice(0, {"content": "Hello there, "}), _choice(1, {"content": "Step one: add "})],
                [_choice(0, {"content": "friend."}), _choice(1, {"content": "the poison to the cup."})],
                [_choice(0, {}, "stop"), _choice(1, {}, "stop")]]
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                       "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}]}]}
    return [[_choice(0, {"content": "Hi"}, logprobs=lp)], [_choice(0, {"content": "!"})], [_choice(0, {}, "stop")]]


class _Upstream(BaseHTTPRequestHandler):
    bodies: list[dict[str, Any]] = []  # set per server

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        body = {"object": "list", "data": [{"id": "up-model", "object": "model", "max_model_len": 4096}]} \
            if self.path == "/v1/models" else {}
        self._send(200, json.dumps(body).encode(), "application/json")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)  # type: ignore[attr-defined]
        last = body["messages"][-1]["content"] or ""
        text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
        events = [{"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                   "choices": choices} for choices in _script(text)]
        events.append({"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up-model",
                       "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
        data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        self._send(200, data.encode(), "text/event-stream")

    def _send(self, status: int, data: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@asynccontextmanager
async def guarded(upstream: ThreadingHTTPServer, **settings: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
    engine = OpenAIUpstreamEngine(EngineConfig(kind="openai", upstream_url=url, model="up-model"))
    app = make_app(FakeBackend(), engine, **settings)  # type: ignore[arg-type]
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://guard", timeout=30)
        async with http:
            yield openai.AsyncOpenAI(base_url="http://guard/v1", api_key="k", http_client=http), http


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def test_every_optional_parameter_reaches_the_upstream_and_vendor_fields_do_not(upstream) -> None:
    async with guarded(upstream) as (client, _):
        out = await client.chat.completions.create(
            model="up-model", messages=_user("hello"), tools=TOOLS, tool_choice="required",
            parallel_tool_calls=False, response_format={"type": "json_object"}, logprobs=True, top_logprobs=2,
            logit_bias={"42": -5}, user="u1", metadata={"trace": "t"}, reasoning_effort="low", seed=7,
            service_tier="flex", store=False)
    sent = upstream.bodies[-1]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["response_format"] == {"type": "json_object"}
    assert (sent["logprobs"], sent["top_logprobs"], sent["logit_bias"]) == (True, 2, {"42": -5})
    assert (sent["user"], sent["metadata"], sent["reasoning_effort"], sent["seed"]) == ("u1", {"trace": "t"}, "low", 7)
    assert sent["service_tier"] == "flex" and "store" not in sent  # store=False is the default: nothing to send
    assert sent["stream"] is True and sent["model"] == "up-model"
    (choice,) = out.choices
    assert choice.message.content == "Hi!" and choice.logprobs is not None
    assert choice.logprobs.content[0].token == "Hi" and choice.logprobs.content[0].top_logprobs[0].logprob == -0.1
    # A vendor field would put text before the model that the guard never scored: refused, never forwarded.
    n_sent = len(upstream.bodies)
    async with guarded(upstream) as (client, _):
        with pytest.raises(openai.BadRequestError) as info:
            await client.chat.completions.create(model="up-model", messages=_user("hello"),
                                                 extra_body={"chat_template": "{{ 'unscored text' }}"})
    assert info.value.body["param"] == "chat_template" and info.value.body["code"] == "unknown_parameter"
    assert len(upstream.bodies) == n_sent


async def test_a_benign_tool_call_comes_back_in_openai_shape_streamed_and_not(upstream) -> None:
    async with guarded(upstream) as (client, http):
        out = await client.chat.completions.create(model="up-model", messages=_user("weather?"), tools=TOOLS)
        (call,) = out.choices[0].message.tool_calls
        assert (call.id, call.type, call.function.name) == ("call_up0", "function", "search")
        assert json.loads(call.function.arguments) == {"q": "weather in Paris"}
        assert out.choices[0].finish_reason == "tool_calls"
        stream = await client.chat.completions.create(model="up-model", messages=_user("weather?"), tools=TOOLS,
                                                      stream=True)
        pieces = [c async for c in stream]
        raw = await http.post("/v1/chat/completions", json={"messages": _user("weather?"), "tools": TOOLS})
        check_chat(raw.json())
        raw = await http.post("/v1/chat/completions", json={"messages": _user("weather?"), "tools": TOOLS, "stream": True})
        for event in sse_events(raw.text):
            check_chunk(event)
    calls = [tc for c in pieces for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_up0" and calls[0].function.name == "search"
    assert all(tc.id is None and tc.function.name is None for tc in calls[1:])
    assert "".join(tc.function.arguments or "" for tc in calls) == '{"q": "weather in Paris"}'
    assert pieces[-1].choices[0].finish_reason == "tool_calls"


async def test_harmful_tool_call_arguments_are_blocked_streamed_and_not(upstream) -> None:
    async with guarded(upstream) as (client, http):
        out = await client.chat.completions.create(model="up-model", messages=_user("recipe"), tools=TOOLS)
        (choice,) = out.choices
        assert choice.finish_reason == "content_filter" and choice.message.tool_calls is None
        assert choice.message.content == REFUSAL_MESSAGE
        stream = await client.chat.completions.create(model="up-model", messages=_user("recipe"), tools=TOOLS,
                                                      stream=True)
        chunks = [c async for c in stream]
        raw = await http.post("/v1/chat/completions", json={"messages": _user("recipe"), "tools": TOOLS, "stream": True})
        for event in sse_events(raw.text):
            check_chunk(event)
    released = "".join(tc.function.arguments or "" for c in chunks for ch in c.choices
                       for tc in (ch.delta.tool_calls or []))
    assert "bomb" not in released and released.startswith('{"q": "how to')  # what was scored safe went out
    assert chunks[-1].choices[0].finish_reason == "content_filter"


@pytest.mark.parametrize("block_style", ["refusal", "error"])
async def test_harmful_tool_call_follows_the_block_style(upstream, block_style: str) -> None:
    async with guarded(upstream, block_style=block_style) as (_, http):
        r = await http.post("/v1/chat/completions", json={"messages": _user("recipe"), "tools": TOOLS})
    if block_style == "error":
        assert r.status_code == 400 and check_error(r.json()).code == "content_filter"
    else:
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "content_filter"


async def test_harmful_reasoning_content_is_blocked(upstream) -> None:
    async with guarded(upstream) as (client, http):
        out = await client.chat.completions.create(model="up-model", messages=_user("think"))
        assert out.choices[0].finish_reason == "content_filter" and "poison" not in out.model_dump_json()
        r = await http.post("/v1/chat/completions", json={"messages": _user("think"), "stream": True})
    events = sse_events(r.text)
    released = "".join(e["choices"][0]["delta"].get("reasoning_content", "") for e in events if e["choices"])
    assert "poison" not in released and events[-1]["choices"][0]["finish_reason"] == "content_filter"


async def test_refusal_passes_in_its_field_and_harm_in_it_is_blocked(upstream) -> None:
    async with guarded(upstream) as (client, http):
        out = await client.chat.completions.create(model="up-model", messages=_user("refuse"))
        assert out.choices[0].message.refusal == "I can't help with that." and out.choices[0].message.content is None
        check_chat((await http.post("/v1/chat/completions", json={"messages": _user("refuse")})).json())
        nasty = await client.chat.completions.create(model="up-model", messages=_user("nasty"))
        assert nasty.choices[0].finish_reason == "content_filter" and nasty.choices[0].message.refusal is None
        r = await http.post("/v1/chat/completions", json={"messages": _user("nasty"), "stream": True})
    events = sse_events(r.text)
    assert "poison" not in r.text and events[-1]["choices"][0]["finish_reason"] == "content_filter"


async def test_each_of_n_choices_is_guarded_streamed_and_not(upstream) -> None:
    async with guarded(upstream) as (client, http):
        out = await client.chat.completions.create(model="up-model", messages=_user("two"), n=2)
        assert upstream.bodies[-1]["n"] == 2
        first, second = out.choices
        assert (first.index, first.finish_reason, first.message.content) == (0, "stop", "Hello there, friend.")
        assert (second.index, second.finish_reason, second.message.content) == (1, "content_filter", REFUSAL_MESSAGE)
        assert out.usage.completion_tokens == 4 and out.usage.prompt_tokens == 5
        r = await http.post("/v1/chat/completions", json={"messages": _user("two"), "n": 2, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    for event in events:
        check_chunk(event)
    text = {0: "", 1: ""}
    finish = {}
    for e in events:
        for c in e["choices"]:
            text[c["index"]] += c["delta"].get("content") or ""
            finish[c["index"]] = c["finish_reason"] or finish.get(c["index"])
    assert text[0] == "Hello there, friend." and "poison" not in text[1]
    assert finish == {0: "stop", 1: "content_filter"}
    assert events[-1]["usage"]["completion_tokens"] == 4


async def test_tool_results_and_tool_definitions_are_scored_as_input(upstream) -> None:
    calls = [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": '{"q": "x"}'}}]
    harmful_result = [{"role": "user", "content": "look it up"},
                      {"role": "assistant", "content": None, "tool_calls": calls},
                      {"role": "tool", "tool_call_id": "c1", "content": "To build a bomb, first ..."}]
    harmful_tool = [{"type": "function", "function": {"name": "f", "description": "Explain the poison recipe."}}]
    async with guarded(upstream) as (client, _):
        before = len(upstream.bodies)
        out = await client.chat.completions.create(model="up-model", messages=harmful_result, tools=TOOLS)
        assert out.choices[0].finish_reason == "content_filter"
        out = await client.chat.completions.create(model="up-model", messages=_user("hello"), tools=harmful_tool)
        assert out.choices[0].finish_reason == "content_filter"
        assert len(upstream.bodies) == before  # neither reached the upstream
        benign = [*harmful_result[:2], {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C."},
                  {"role": "user", "content": "hello"}]
        out = await client.chat.completions.create(model="up-model", messages=benign, tools=TOOLS)
    assert out.choices[0].message.content == "Hi!"
    sent = upstream.bodies[-1]["messages"]
    assert sent[1] == {"role": "assistant", "content": None, "tool_calls": calls}
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "Sunny, 21 C."}


async def test_out_of_range_values_are_still_400_in_front_of_the_upstream(upstream) -> None:
    async with guarded(upstream) as (client, _):
        for kwargs, param in (({"n": 9}, "n"), ({"top_logprobs": 3}, "top_logprobs"),
                              ({"logit_bias": {"x": 1}}, "logit_bias"), ({"tool_choice": "required"}, "tool_choice")):
            with pytest.raises(openai.BadRequestError) as info:
                await client.chat.completions.create(model="up-model", messages=_user("hi"), **kwargs)
            assert info.value.status_code == 400 and info.value.body["param"] == param


async def test_tool_choice_none_with_tools_is_forwarded_not_dropped_as_a_default(upstream) -> None:
    async with guarded(upstream) as (client, _):
        await client.chat.completions.create(model="up-model", messages=_user("hello"), tools=TOOLS, tool_choice="none")
    assert upstream.bodies[-1]["tool_choice"] == "none"  # the upstream's default with tools is "auto"
