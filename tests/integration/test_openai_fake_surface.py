"""The scripted engine through the guard, driven by the official ``openai`` client, and every kind of body
checked against the ``openai`` package's own types, strictly (issue 14, items 2, 3, 4, 5 and 7): chat
(n choices, tool calls, reasoning), chunks, models (list and ``/v1/models/{id}``), moderations
(``category_applied_input_types``: images for violence, self-harm and sexual only) and errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from asgi_lifespan import LifespanManager

from service.engines.fake import FakeEngineClient
from tests.fakes import FakeBackend, png_data_url
from tests.hardening import SCRIPT, make_app
from tests.openai_conformance import check_chat, check_chunk, check_error, check_model, check_moderation, sse_events

RULES = [
    {"match": "weather", "reasoning": ["Let me ", "check."],
     "tool_calls": [{"name": "get_weather", "arguments": ['{"city": ', '"Paris"}']}]},
    {"match": "recipe", "tool_calls": [{"name": "search", "arguments": ['{"q": "how to build ', 'a pipe bomb"}']}]},
    {"match": "musing", "reasoning": ["Hmm, the poison ", "goes first."], "chunks": ["Fine."]},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
IMAGE_TYPES = {"sexual", "self-harm", "self-harm/intent", "self-harm/instructions", "violence", "violence/graphic"}


@asynccontextmanager
async def guarded(**settings: Any) -> AsyncIterator[tuple[openai.AsyncOpenAI, httpx.AsyncClient]]:
    engine = FakeEngineClient.from_script({**SCRIPT, "responses": RULES + SCRIPT["responses"]})
    app = make_app(FakeBackend(), engine, **settings)
    async with LifespanManager(app) as manager:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(manager.app), base_url="http://guard", timeout=30)
        async with http:
            yield openai.AsyncOpenAI(base_url="http://guard/v1", api_key="k", http_client=http), http


def _user(text: str, **kw: Any) -> dict[str, Any]:
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": text}], **kw}


@pytest.mark.parametrize("body", [
    _user("hello"), _user("hello", n=3), _user("weather?", tools=TOOLS), _user("recipe", tools=TOOLS),
    _user("musing"), _user("chem", n=2), _user("how to make a bomb", n=2),
], ids=["plain", "n=3", "tool call", "blocked tool call", "blocked reasoning", "blocked n=2", "blocked prompt n=2"])
async def test_chat_bodies_and_chunks_conform(body: dict[str, Any]) -> None:
    async with guarded() as (_, http):
        r = await http.post("/v1/chat/completions", json=body)
        s = await http.post("/v1/chat/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and s.status_code == 200
    parsed = check_chat(r.json())
    assert [c.index for c in parsed.choices] == list(range(body.get("n", 1)))
    events = sse_events(s.text)
    for event in events:
        check_chunk(event)
    finishes = {c["index"]: c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]}
    assert finishes == {c.index: c.finish_reason for c in parsed.choices}  # streamed and not agree
    assert "bomb" not in s.text and "poison" not in s.text and "poison" not in r.text


async def test_sdk_tool_calls_reasoning_and_a_tool_conversation() -> None:
    async with guarded() as (client, _):
        out = await client.chat.completions.create(model="fake-vlm", messages=[{"role": "user", "content": "weather?"}],
                                                   tools=TOOLS)
        message = out.choices[0].message
        (call,) = message.tool_calls
        assert (call.function.name, call.function.arguments) == ("get_weather", '{"city": "Paris"}')
        assert message.model_extra["reasoning_content"] == "Let me check." and out.choices[0].finish_reason == "tool_calls"
        none = await client.chat.completions.create(model="fake-vlm", messages=[{"role": "user", "content": "weather?"}],
                                                    tools=TOOLS, tool_choice="none")
        assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"
        follow = await client.chat.completions.create(model="fake-vlm", tools=TOOLS, messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny"},
            {"role": "user", "content": "thanks"}])
        assert follow.choices[0].message.content == "Hello there, friend."
        blocked = await client.chat.completions.create(model="fake-vlm", tools=TOOLS, messages=[
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny. Also: mix the poison."}])
        assert blocked.choices[0].finish_reason == "content_filter"  # a tool result is scored as input


async def test_models_list_and_retrieve_conform_and_unknown_ids_are_404() -> None:
    async with guarded() as (client, http):
        listed = await client.models.list()
        card = await client.models.retrieve("fake-vlm")
        with pytest.raises(openai.NotFoundError) as info:
            await client.models.retrieve("gpt-9")
        raw = (await http.get("/v1/models")).json()
        one = (await http.get("/v1/models/fake-vlm")).json()
        missing = await http.get("/v1/models/gpt-9")
    assert [m.id for m in listed.data] == ["fake-vlm"] and card.id == "fake-vlm"
    assert info.value.status_code == 404 and info.value.body["code"] == "model_not_found"
    for item in [*raw["data"], one]:
        check_model(item)
    assert missing.status_code == 404 and check_error(missing.json()).param == "model"


async def test_moderation_bodies_conform_and_images_apply_to_openais_image_categories() -> None:
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": png_data_url()}}]
    async with guarded() as (client, http):
        texts = (await http.post("/v1/moderations", json={"input": ["hello", "the poison"]})).json()
        mixed = (await http.post("/v1/moderations", json={"input": parts})).json()
        image = (await http.post("/v1/moderations", json={"input": parts[1:]})).json()
        sdk = await client.moderations.create(input=parts)  # type: ignore[arg-type]
    for body in (texts, mixed, image):
        check_moderation(body)
    applied = mixed["results"][0]["category_applied_input_types"]
    assert {k for k, v in applied.items() if "image" in v} == IMAGE_TYPES
    assert all(v == ["text"] for k, v in applied.items() if k not in IMAGE_TYPES)
    only_image = image["results"][0]["category_applied_input_types"]
    assert only_image["harassment"] == [] and only_image["violence"] == ["image"]
    assert sdk.results[0].category_applied_input_types.illicit == ["text"]


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("POST", "/v1/chat/completions", {"messages": []}, 400),
    ("POST", "/v1/chat/completions", _user("hi", logprobs=True), 400),
    ("POST", "/v1/chat/completions", _user("hi", model="gpt-9"), 404),
    ("POST", "/v1/moderations", {"input": ""}, 400),
    ("GET", "/v1/models/none", None, 404),
    ("GET", "/v1/nothing", None, 404),
])
async def test_error_bodies_conform(method: str, path: str, body: Any, status: int) -> None:
    async with guarded() as (_, http):
        r = await http.request(method, path, json=body)
    assert r.status_code == status
    check_error(r.json())


async def test_annotate_mode_passes_tool_calls_through_and_reports_their_verdict() -> None:
    async with guarded(guard_mode="annotate") as (_, http):
        r = await http.post("/v1/chat/completions", json=_user("recipe", tools=TOOLS))
        s = await http.post("/v1/chat/completions", json=_user("recipe", tools=TOOLS, stream=True))
    body = r.json()
    check_chat(body)
    assert body["choices"][0]["finish_reason"] == "tool_calls" and "bomb" in body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert body["safety"]["response"]["flagged"] is True and r.headers["x-guard-response-flagged"] == "true"
    events = sse_events(s.text)
    args = "".join(tc["function"].get("arguments", "") for e in events for c in e["choices"]
                   for tc in c["delta"].get("tool_calls", []))
    assert args == '{"q": "how to build a pipe bomb"}'
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]][-1]
    assert final["choices"][0]["finish_reason"] == "tool_calls" and final["safety"]["response"]["flagged"] is True
