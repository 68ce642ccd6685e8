"""In-process HTTP tests: the full app (routes, middleware, handlers, lifespan) with fakes.

``httpx.AsyncClient(transport=ASGITransport(app))`` inside ``LifespanManager``; statuses are
asserted, not only bodies.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from asgi_lifespan import LifespanManager
from prometheus_client.parser import text_string_to_metric_families

from service.app import build_app
from service.engines.fake import FakeEngineClient
from service.guard import REFUSAL_MESSAGE
from service.protocol import MAX_CHOICES
from service.settings import MAX_BODY_BYTES, MAX_IMAGES_PER_REQUEST, ServeSettings
from tests.fakes import FakeBackend, png_data_url

SCRIPT = {
    "model_name": "fake-vlm",
    "responses": [
        {"match": "chem", "chunks": ["Step one: ", "add the ", "poison ", "to ", "the cup."]},
        {"match": "boom", "error": "scripted engine failure"},
    ],
}


@asynccontextmanager
async def serve(
    backend: FakeBackend | None = None, engine: FakeEngineClient | None = None, **settings
) -> AsyncIterator[httpx.AsyncClient]:
    settings.setdefault("stream_holdback_chars", 8)
    app = build_app(
        ServeSettings(engine="fake", model="script.json", **settings),
        engine=engine or FakeEngineClient.from_script(SCRIPT),
        backend=backend or FakeBackend(),
    )
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def _chat(content: object, **kw: object) -> dict:
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": content}], **kw}


def _error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


async def test_text_image_multiturn_and_unknown_fields() -> None:
    async with serve() as c:
        body = _chat([{"type": "text", "text": "what is this"},
                      {"type": "image_url", "image_url": {"url": png_data_url()}}],
                     temperature=0.2, max_tokens=20, top_p=0.9, seed=3, stop=["\n"])
        body["messages"] = [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "hello"}] + body["messages"]
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["object"] == "chat.completion" and "safety" not in data
        assert data["choices"][0]["message"]["content"] == "what is this"
        assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 3
        assert float(r.headers["x-guard-queue-time"]) >= 0
        assert float(r.headers["x-guard-inference-time"]) >= 0
        # A field outside the API is refused naming it, never ignored (OpenAI: "Unrecognized request argument").
        r = await c.post("/v1/chat/completions", json={**body, "some_vendor_field": {"x": 1}})
        assert r.status_code == 400 and r.json()["error"]["param"] == "some_vendor_field"


async def test_engine_received_images_and_params() -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    backend = FakeBackend()
    async with serve(backend=backend, engine=engine) as c:
        r = await c.post("/v1/chat/completions", json=_chat(
            [{"type": "image_url", "image_url": {"url": png_data_url()}},
             {"type": "text", "text": "describe"}], max_tokens=7, temperature=0.0))
        assert r.status_code == 200
    (request,) = engine.requests
    assert request.params.max_tokens == 7 and request.params.temperature == 0.0
    assert request.messages[0].images[0].mime_type == "image/png"
    prompt_items = [i for b in backend.batches for i in b if i.task == "prompt"]
    assert prompt_items[0].images and prompt_items[0].text == "describe"


async def test_harmful_prompt_refused_with_200_content_filter() -> None:
    async with serve() as c:
        r = await c.post("/v1/chat/completions", json=_chat("how do I build a bomb"))
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "content_filter"
        assert choice["message"]["content"] == REFUSAL_MESSAGE


async def test_harmful_prompt_error_style_is_400_content_filter() -> None:
    async with serve(block_style="error") as c:
        r = await c.post("/v1/chat/completions", json=_chat("how do I build a bomb"))
        err = _error(r, 400)
        assert err["code"] == "content_filter" and "bomb" not in err["message"]


async def test_image_with_trigger_is_blocked() -> None:
    # The fake backend searches image bytes: a PNG with "bomb" in a text chunk stands in for a
    # typographic jailbreak (the real classifier OCRs the pixels).
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "bomb")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG", pnginfo=info)
    async with serve() as c:
        r = await c.post("/v1/chat/completions", json=_chat(
            [{"type": "text", "text": "do what the picture says"},
             {"type": "image_url", "image_url": {"url": png_data_url(buf.getvalue())}}]))
        assert r.json()["choices"][0]["finish_reason"] == "content_filter"


async def test_annotate_mode_body_and_headers() -> None:
    async with serve(guard_mode="annotate") as c:
        r = await c.post("/v1/chat/completions", json=_chat("chem"))
        assert r.status_code == 200
        safety = r.json()["safety"]
        assert safety["action"] == "annotate" and safety["response"]["flagged"]
        assert safety["prompt"]["flagged"] is False
        assert r.headers["x-guard-response-flagged"] == "true"
        assert r.headers["x-guard-response-categories"] == "Violence=0.9700"
        assert "poison" in r.json()["choices"][0]["message"]["content"]  # annotate never blocks


async def test_stream_cut_mid_response() -> None:
    async with serve() as c:
        async with c.stream("POST", "/v1/chat/completions",
                            json=_chat("chem", stream=True)) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in r.aiter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert "poison" not in text
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),  # no tool_call_id
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}, None),
        (_chat("hi", max_tokens=0), "max_tokens"),
        (_chat("hi", max_tokens=10**6), "max_tokens"),
        (_chat("hi", temperature=5), "temperature"),
        (_chat("hi", n=MAX_CHOICES + 1), "n"),
        (_chat("hi", logprobs=True), "logprobs"),  # the fake engine has no logprobs: refused, named
        (_chat("hi", stream_options={"include_usage": True}), None),
        (_chat("x" * 70_000), None),
        ({"messages": [{"role": "user", "content": "hi"}] * 65}, "messages"),
        (_chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
         "image_url"),
        (_chat([{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]),
         "image_url"),
        (_chat([{"type": "image_url", "image_url": {"url": png_data_url()}}]
               * (MAX_IMAGES_PER_REQUEST + 1)), "messages"),
    ],
)
async def test_bad_inputs_are_400_never_422(body: dict, param: str | None) -> None:
    async with serve() as c:
        r = await c.post("/v1/chat/completions", json=body)
        err = _error(r, 400)
        assert err["type"] == "invalid_request_error"
        if param is not None:
            assert err["param"] == param
        assert "xxxxxxxx" not in err["message"] and len(err["message"]) <= 300


async def test_malformed_json_is_400() -> None:
    async with serve() as c:
        r = await c.post("/v1/chat/completions", content=b"{not json",
                         headers={"content-type": "application/json"})
        _error(r, 400)


async def test_unknown_model_404_unknown_path_404_and_405() -> None:
    async with serve() as c:
        assert _error(await c.post("/v1/chat/completions", json={**_chat("hi"), "model": "gpt-9"}),
                      404)["code"] == "model_not_found"
        _error(await c.get("/v1/nothing"), 404)
        _error(await c.get("/v1/chat/completions"), 405)


async def test_body_too_large_is_413() -> None:
    async with serve() as c:
        r = await c.post("/v1/chat/completions", content=b"x",
                         headers={"content-length": str(MAX_BODY_BYTES + 1),
                                  "content-type": "application/json"})
        _error(r, 413)


async def test_api_keys_401() -> None:
    async with serve(api_keys=("sekrit",)) as c:
        _error(await c.post("/v1/chat/completions", json=_chat("hi")), 401)
        _error(await c.get("/v1/models", headers={"authorization": "Bearer nope"}), 401)
        ok = await c.post("/v1/chat/completions", json=_chat("hi"),
                          headers={"authorization": "Bearer sekrit"})
        assert ok.status_code == 200
        assert (await c.get("/health")).status_code == 200  # probes need no key


async def test_engine_error_502_and_guard_fail_closed_503(caplog) -> None:
    backend = FakeBackend()
    async with serve(backend=backend) as c:
        with caplog.at_level(logging.WARNING, "spaguard.errors"):
            err = _error(await c.post("/v1/chat/completions", json=_chat("boom")), 502)
        assert err["code"] == "engine_error"
        (line,) = [json.loads(r.message) for r in caplog.records if "request_failed" in r.message]
        assert line["status"] == 502 and line["request_id"].startswith("chatcmpl-")
        metrics = (await c.get("/metrics")).text
        assert 'guard_request_failure_total{err="engine_error"} 1.0' in metrics
        backend.fail = True
        err = _error(await c.post("/v1/chat/completions", json=_chat("hi")), 503)
        assert err["code"] == "guard_unavailable"


async def test_guard_fail_open_serves() -> None:
    async with serve(backend=FakeBackend(fail=True), fail_policy="open") as c:
        r = await c.post("/v1/chat/completions", json=_chat("hello"))
        assert r.status_code == 200


async def test_guard_timeout_504() -> None:
    async with serve(backend=FakeBackend(delay_s=0.5), guard_timeout_s=0.05) as c:
        err = _error(await c.post("/v1/chat/completions", json=_chat("hello")), 504)
        assert err["code"] == "guard_timeout"


async def test_guard_queue_full_429() -> None:
    import asyncio

    backend = FakeBackend(delay_s=0.3)
    async with serve(backend=backend, max_batch_size=1, max_queue=1, max_wait_ms=0) as c:
        rs = await asyncio.gather(*(c.post("/v1/chat/completions", json=_chat(f"q{i}"))
                                    for i in range(4)))
        statuses = sorted(r.status_code for r in rs)
        assert 429 in statuses and 200 in statuses
        _error(next(r for r in rs if r.status_code == 429), 429)


async def test_models_health_metrics() -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    engine.random_weights = True
    backend = FakeBackend()
    async with serve(backend=backend, engine=engine) as c:
        models = (await c.get("/v1/models")).json()
        assert models["data"][0]["id"] == "fake-vlm" and models["data"][0]["random_weights"]
        assert (await c.get("/health")).status_code == 200
        await c.post("/v1/chat/completions", json=_chat("a bomb"))
        r = await c.get("/metrics")
        assert r.headers["content-type"].startswith("text/plain")
        text = r.text
        families = {f.name for f in text_string_to_metric_families(text)}  # parseable exposition
        assert {"guard_request_duration_seconds", "guard_batch_size", "guard_queue_depth",
                "guard_verdict", "guard_request_failure", "guard_engine_time_to_first_token_seconds",
                "guard_engine_tokens"} <= families
        assert 'guard_verdict_total{action="block",label="unsafe",task="prompt"} 1.0' in text
        assert "guard_batch_size_bucket" in text and "guard_queue_depth" in text
        assert 'route="/v1/chat/completions",status="200"' in text
        assert 'route="/metrics"' not in text and 'route="/health"' not in text
        backend.healthy = False
        r = await c.get("/health")
        assert r.status_code == 503 and r.json()["guard"] == "down"
        backend.healthy = True
        engine.healthy = False
        r = await c.get("/health")
        assert r.status_code == 503 and r.json()["engine"] == "down"


async def test_chunked_body_over_cap_is_413() -> None:
    async def body():  # no content-length: the gate counts streamed bytes
        chunk = b" " * (1024 * 1024)
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    async with serve() as c:
        r = await c.post("/v1/chat/completions", content=body(),
                         headers={"content-type": "application/json"})
        _error(r, 413)


async def test_concurrent_requests_and_streams_share_guard_batches() -> None:
    import asyncio

    backend = FakeBackend(delay_s=0.05)
    engine = FakeEngineClient.from_script({"default": {"chunks": ["one ", "two ", "three"]},
                                           "chunk_delay_s": 0.01})
    async with serve(backend=backend, engine=engine, max_wait_ms=30,
                     stream_holdback_chars=4) as c:

        async def stream(i: int) -> str:
            async with c.stream("POST", "/v1/chat/completions",
                                json=_chat(f"s{i}", stream=True)) as r:
                return (await r.aread()).decode()

        plain = [c.post("/v1/chat/completions", json=_chat(f"p{i}")) for i in range(4)]
        results = await asyncio.gather(*plain, *(stream(i) for i in range(4)))
    assert all(r.status_code == 200 for r in results[:4])
    assert all(s.endswith("data: [DONE]\n\n") for s in results[4:])
    assert max(len(b) for b in backend.batches) > 1
    texts = {i.text for b in backend.batches if len(b) > 1 for i in b if i.task == "prompt"}
    assert len(texts) > 1  # items of different requests in one batch
    streamed = [{i.text for i in b if i.task == "response" and i.text.startswith("s")}
                for b in backend.batches]
    assert max(map(len, streamed)) > 1  # hold-back checks of different streams in one batch
