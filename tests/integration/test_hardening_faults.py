"""Faults, in process (build item 4): the engine down, slow or dying mid-stream; the classifier
backend raising or hanging; client disconnects at each stage. Each follows the configured policy,
is counted in ``guard_request_failure_total`` and shows in ``/health``.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from service.engines.fake import FakeEngineClient
from tests.fakes import FakeBackend
from tests.hardening import SCRIPT, call_then_disconnect, chat, envelope, metric, serve


async def _failures(c) -> dict[str, int]:
    return (await c.get("/health")).json()["failures"]


def _events(text: str) -> list[dict]:
    assert text.endswith("data: [DONE]\n\n"), text[-300:]
    return [json.loads(e[6:]) for e in text.split("\n\n") if e and e != "data: [DONE]"]


@pytest.mark.reliability("faults", "engine down", "503 engine_unavailable; /health engine down; counted")
async def test_engine_down() -> None:
    engine = FakeEngineClient.from_script(
        {**SCRIPT, "responses": [{"match": "hi", "error": "no engine", "error_status": 503}]})
    async with serve(engine=engine) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi")), 503)
        assert err["code"] == "engine_unavailable"
        engine.healthy = False
        health = await c.get("/health")
        assert health.status_code == 503 and health.json()["engine"] == "down"
        assert health.json()["guard"] == "ok"
        assert health.json()["failures"]["engine_unavailable"] == 1
        engine.healthy = True
        assert (await c.get("/health")).status_code == 200


@pytest.mark.reliability("faults", "engine slow past --request-timeout-s", "504 / error event, engine aborted, counted")
async def test_engine_slow() -> None:
    engine = FakeEngineClient.from_script({**SCRIPT, "chunk_delay_s": 0.5})
    async with serve(engine=engine, request_timeout_s=0.3) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi")), 504)
        assert err["code"] == "generation_timeout"
        r = await c.post("/v1/chat/completions", json=chat("hi", stream=True))
        events = _events(r.text)
        assert events[-1]["error"]["code"] == "generation_timeout"
        failures = await _failures(c)
        assert failures["generation_timeout"] == 1 and failures["stream"] == 1
        assert (await c.get("/health")).status_code == 200
    assert len(engine.aborted) == 2


@pytest.mark.reliability("faults", "engine dying mid-stream", "released text, one error event, [DONE]; counted")
async def test_engine_dies_mid_stream() -> None:
    engine = FakeEngineClient.from_script(SCRIPT)
    async with serve(engine=engine, stream_holdback_chars=4) as c:
        r = await c.post("/v1/chat/completions", json=chat("die now", stream=True))
        events = _events(r.text)
        text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1] if e.get("choices"))
        assert text and "Half an answer".startswith(text)  # scored text released, nothing after
        assert events[-1]["error"]["code"] == "engine_unavailable"
        err = envelope(await c.post("/v1/chat/completions", json=chat("die now")), 503)
        assert err["code"] == "engine_unavailable"
        failures = await _failures(c)
        assert failures["stream"] == 1 and failures["engine_unavailable"] == 1


@pytest.mark.reliability("faults", "classifier raising, --fail-policy closed", "503 guard_unavailable; /health guard down until it recovers")
async def test_backend_raising_fail_closed() -> None:
    backend = FakeBackend(fail=True)
    async with serve(backend=backend) as c:
        err = envelope(await c.post("/v1/chat/completions", json=chat("hi")), 503)
        assert err["code"] == "guard_unavailable"
        health = await c.get("/health")
        assert health.status_code == 503 and health.json()["guard"] == "down"
        assert health.json()["guard_detail"]["last_call_failed"] is True
        assert health.json()["failures"]["backend_error"] == 1
        backend.fail = False
        assert (await c.post("/v1/chat/completions", json=chat("hi"))).status_code == 200
        assert (await c.get("/health")).status_code == 200


@pytest.mark.reliability("faults", "classifier raising, --fail-policy open", "200 flagged fail_open; counted; /health guard down")
async def test_backend_raising_fail_open() -> None:
    async with serve(backend=FakeBackend(fail=True), fail_policy="open", guard_mode="annotate") as c:
        r = await c.post("/v1/chat/completions", json=chat("hi"))
        assert r.status_code == 200 and r.headers["x-guard-action"] == "fail_open"
        assert r.json()["safety"]["action"] == "fail_open"
        metrics = (await c.get("/metrics")).text
        assert metric(metrics, "guard_request_failure_total", err="backend_error") >= 1
        assert (await c.get("/health")).json()["guard"] == "down"


@pytest.mark.reliability("faults", "classifier hanging past --guard-timeout-s", "504 guard_timeout (closed) / fail_open (open); /health guard down while hung")
@pytest.mark.parametrize("policy", ["closed", "open"])
async def test_backend_hanging(policy: str) -> None:
    backend = FakeBackend(delay_s=1.5)
    async with serve(backend=backend, guard_timeout_s=0.3, fail_policy=policy,
                     guard_mode="annotate") as c:
        request = asyncio.create_task(c.post("/v1/chat/completions", json=chat("hi")))
        await asyncio.sleep(0.5)  # the classifier call is now past the guard's timeout
        health = await c.get("/health")
        assert health.status_code == 503 and health.json()["guard"] == "down"
        assert health.json()["guard_detail"]["busy_s"] > 0.3
        r = await request
        if policy == "closed":
            assert envelope(r, 504)["code"] == "guard_timeout"
        else:
            assert r.status_code == 200 and r.headers["x-guard-action"] == "fail_open"
        await asyncio.sleep(1.2)  # the hung call ends
        backend.delay_s = 0.0
        assert (await c.get("/health")).status_code == 200
        assert (await _failures(c))["timeout"] >= 1


class _SlowResponses(FakeBackend):
    """Slow only on response items: a disconnect can land during the response check."""

    def score(self, batch):
        if any(i.response is not None for i in batch):
            import time

            time.sleep(0.4)
        return super().score(batch)


STAGES = {
    "during the prompt check": dict(backend=FakeBackend(delay_s=0.4), stream=False, after=0.1),
    "during generation": dict(engine_delay=0.3, stream=False, after=0.2),
    "mid-stream": dict(engine_delay=0.2, stream=True, after=0.3),
    "during the response check": dict(backend=_SlowResponses(), stream=False, after=0.1),
}


@pytest.mark.reliability("faults", "client disconnects", "work stopped (engine aborted), counted, server healthy, no task leak")
@pytest.mark.parametrize("stage", sorted(STAGES))
async def test_client_disconnect_at_each_stage(stage: str) -> None:
    cfg = STAGES[stage]
    engine = FakeEngineClient.from_script({**SCRIPT, "chunk_delay_s": cfg.get("engine_delay", 0.0)})
    async with serve(backend=cfg.get("backend"), engine=engine) as c:
        before = len(asyncio.all_tasks())
        statuses = await call_then_disconnect(c.asgi, chat("hi", stream=cfg["stream"]), cfg["after"])
        assert all(s < 500 or s == 499 for s in statuses) and statuses
        await asyncio.sleep(0.6)  # let the work that was stopped wind down
        assert len(asyncio.all_tasks()) <= before  # nothing left running for the gone client
        health = await c.get("/health")
        assert health.status_code == 200, health.text
        # The work for the gone client was stopped wherever it was, and counted.
        assert health.json()["failures"]["client_disconnected"] == 1
        assert statuses == ([200] if cfg["stream"] else [499])
        if stage == "during the prompt check":
            assert engine.requests == []  # never generated
        elif stage != "during the response check":
            assert engine.aborted  # generation under way: aborted
        assert (await c.post("/v1/chat/completions", json=chat("hi"))).status_code == 200
