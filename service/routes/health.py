"""``GET /health`` (200 / 503 with which part is down) and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import asyncio

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
    guard_ok = state.batcher.running and await _backend_ok(state.backend)
    body = {"status": "ok" if engine_ok and guard_ok else "unavailable",
            "engine": "ok" if engine_ok else "down", "guard": "ok" if guard_ok else "down"}
    return JSONResponse(body, status_code=200 if engine_ok and guard_ok else 503)


async def _backend_ok(backend: object) -> bool:
    try:
        return bool(await asyncio.to_thread(backend.health))  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a crashing health check means "down"
        return False


async def metrics(raw: Request) -> Response:
    m = raw.app.state.metrics
    m.queue_depth.set(raw.app.state.batcher.depth)
    return Response(m.render(), media_type=m.content_type)


def attach_router(app: FastAPI) -> None:
    app.add_api_route("/health", health, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
