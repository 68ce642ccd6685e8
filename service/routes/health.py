"""``GET /health`` (200 / 503 with which part is down, and why) and ``GET /metrics`` (Prometheus).

``/health`` answers 503 when the engine or the guard cannot serve:
* engine: ``check_health`` raised or took longer than ``HEALTH_CHECK_TIMEOUT_S``;
* guard: the batcher task is not running, the backend's ``health()`` is false or raised, the
  latest classifier call failed (until one succeeds), or the call in progress has run longer
  than the guard's own timeout (a hung classifier).

The body also carries what happened so far, for people and probes alike: ``failures`` (the
``guard_request_failure_total`` counts by kind: guard timeouts, overload, engine errors, broken
streams, client disconnects), the guard's ``busy_s`` and the event loop's task count (``tasks``:
a count that keeps growing at rest is a task leak; ``loadtests/soak.py`` watches it).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from service.engines.base import EngineError

HEALTH_CHECK_TIMEOUT_S = 5.0


async def health(raw: Request) -> JSONResponse:
    state = raw.app.state
    engine_ok = True
    try:
        await asyncio.wait_for(state.engine.check_health(), HEALTH_CHECK_TIMEOUT_S)
    except (EngineError, TimeoutError):
        engine_ok = False
    guard_ok, guard = await _guard_state(state)
    ok = engine_ok and guard_ok
    body = {"status": "ok" if ok else "unavailable",
            "engine": "ok" if engine_ok else "down", "guard": "ok" if guard_ok else "down",
            "guard_detail": guard, "failures": _failure_counts(state.metrics),
            "tasks": len(asyncio.all_tasks())}
    return JSONResponse(body, status_code=200 if ok else 503)


async def _guard_state(state: Any) -> tuple[bool, dict[str, Any]]:
    batcher = state.batcher.health
    stall_s = state.settings.guard_timeout_s
    detail = {"running": batcher.running, "last_call_failed": batcher.last_call_failed,
              "busy_s": round(batcher.busy_s, 3), "backend_ok": await _backend_ok(state.backend)}
    hung = batcher.busy_s > stall_s
    ok = batcher.running and detail["backend_ok"] and not batcher.last_call_failed and not hung
    return ok, detail


async def _backend_ok(backend: object) -> bool:
    try:
        async with asyncio.timeout(HEALTH_CHECK_TIMEOUT_S):
            return bool(await asyncio.to_thread(backend.health))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a crashing or hanging health check means "down"
        return False


def _failure_counts(metrics: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for family in metrics.failures.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                counts[sample.labels["err"]] = int(sample.value)
    return counts


async def metrics(raw: Request) -> Response:
    m = raw.app.state.metrics
    m.queue_depth.set(raw.app.state.batcher.depth)
    return Response(m.render(), media_type=m.content_type)


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
