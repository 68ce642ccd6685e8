"""Shared serving helpers: SSE framing and cancellation on client disconnect.

SSE contract (STYLE.md section 4): every event is ``data: <json>\\n\\n``; an error becomes one
``data: {"error": {...}}`` event; the last event is always ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from service.errors import APIError, ClientDisconnected, GatewayTimeout, envelope
from service.protocol import ChatCompletionStreamResponse

T = TypeVar("T")
DONE = "data: [DONE]\n\n"


def sse(chunk: ChatCompletionStreamResponse) -> str:
    """One SSE event for a chunk, shaped like OpenAI's: ``finish_reason``/``logprobs`` are explicit
    nulls, the delta (and each tool-call piece in it) lists only what it carries, ``usage``/``safety``
    appear only when set."""
    data = chunk.model_dump(mode="json")
    for key in ("usage", "safety"):
        if data.get(key) is None:
            data.pop(key, None)
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        for call in choice["delta"].get("tool_calls") or ():  # a call's later pieces carry arguments only
            for key in [k for k, v in call.items() if v is None]:
                del call[key]
            call["function"] = {k: v for k, v in (call.get("function") or {}).items() if v is not None}
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_error(exc: APIError) -> str:
    """One SSE event carrying the OpenAI error envelope."""
    return f"data: {envelope(exc).model_dump_json()}\n\n"


async def wait_for_disconnect(raw: Request) -> None:
    """Return when the client disconnects (the body has already been read by FastAPI)."""
    while True:
        message = await raw.receive()
        if message["type"] == "http.disconnect":
            return


async def run_cancellable(
    work: Coroutine[Any, Any, T],
    raw: Request | None,
    timeout_s: float | None,
    on_cancel: Callable[[], Awaitable[None]],
) -> T:
    """Run ``work``; on client disconnect or timeout (None: none), cancel it and await ``on_cancel()``.

    Raises ``ClientDisconnected`` or ``GatewayTimeout`` (504) in those cases.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(wait_for_disconnect(raw)) if raw is not None else None
    waiting = {task} if watcher is None else {task, watcher}
    try:
        done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        done = set()
        await _stop(task, watcher, on_cancel)
        raise
    if task in done:
        if watcher is not None:
            watcher.cancel()
        return task.result()
    await _stop(task, watcher, on_cancel)
    if watcher is not None and watcher in done:
        raise ClientDisconnected("client disconnected")
    raise GatewayTimeout("generation timed out", code="generation_timeout")


async def _stop(
    task: asyncio.Future[Any],
    watcher: asyncio.Future[None] | None,
    on_cancel: Callable[[], Awaitable[None]],
) -> None:
    for fut in (task, watcher):
        if fut is not None:
            fut.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.shield(on_cancel())
