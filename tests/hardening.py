"""Helpers of the hardening tests (issue 11): the in-process app, the error-envelope check, an
ASGI driver whose client disconnects on cue, and a live-server fixture factory.

* ``serve(backend, engine, **settings)``: the full app with fakes behind ``httpx.ASGITransport``.
* ``envelope(response, status)``: asserts OpenAI's error envelope and the status; returns ``error``.
* ``call_then_disconnect(app, body, after_s)``: one POST straight through ASGI; the client reads
  nothing back and disconnects ``after_s`` after sending; returns the statuses sent.
* ``metric(app_or_text, name, **labels)``: one sample of the Prometheus exposition.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from service.app import build_app
from service.engines.fake import FakeEngineClient
from service.settings import ServeSettings
from tests.fakes import FakeBackend

SCRIPT: dict[str, Any] = {
    "model_name": "fake-vlm",
    "responses": [
        {"match": "chem", "chunks": ["Step one: ", "add the ", "poison ", "to ", "the cup."]},
        {"match": "boom", "error": "scripted engine failure"},
        {"match": "die", "chunks": ["Half ", "an ", "answer"], "error": "engine died",
         "error_status": 503},
    ],
    "default": {"chunks": ["Hello", " there", ", friend."]},
}
ENVELOPE_KEYS = {"message", "type", "param", "code"}


def make_app(
    backend: FakeBackend | None = None, engine: FakeEngineClient | None = None, **settings: Any
) -> FastAPI:
    settings.setdefault("stream_holdback_chars", 8)
    return build_app(
        ServeSettings(engine="fake", model="script.json", **settings),
        engine=engine or FakeEngineClient.from_script(SCRIPT),
        backend=backend or FakeBackend(),
    )


@asynccontextmanager
async def serve(
    backend: FakeBackend | None = None, engine: FakeEngineClient | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = make_app(backend, engine, **settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]  # for metrics and state
            client.asgi = manager.app  # type: ignore[attr-defined]  # for call_then_disconnect
            yield client


def chat(content: Any, **kw: Any) -> dict[str, Any]:
    return {"model": "fake-vlm", "messages": [{"role": "user", "content": content}], **kw}


def envelope(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == ENVELOPE_KEYS, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


async def call_then_disconnect(app: FastAPI, body: dict[str, Any], after_s: float) -> list[int]:
    """POST ``body`` to /v1/chat/completions through ASGI; the client disconnects ``after_s``
    after its body was read, as uvicorn reports it. Returns the statuses the app sent."""
    raw = json.dumps(body).encode()
    sent_body = False
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await asyncio.sleep(after_s)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("test", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())],
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), 30)
    return statuses
