"""``produce_sse``: runs a stream's guarded events in a producer task and frames them as SSE; ``Served``:
what a generation pipeline (chat, completions) returns, a JSON body or such a stream, with its headers.

The producer (engine + guard) feeds a queue, so the request timeout wraps only the wait for the next
event (never a ``yield``) and a closed stream (client gone) just cancels the producer. An error
becomes one error event; the last event is always ``data: [DONE]`` unless the client went away.
A stream that ends early (client gone, error or timeout) stops the engine with ``abort()``,
shielded, since we may be cancelled. Chat and completions both stream through it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

from service.engines.base import EngineError
from service.errors import APIError, GatewayTimeout, from_engine_error
from service.metrics import GuardMetrics
from service.serving.sse import DONE, sse_error

log = logging.getLogger("spaguard.stream")

BodyT = TypeVar("BodyT")


@dataclass
class Served(Generic[BodyT]):
    """A JSON body or an SSE stream, with the headers to send either way."""

    body: BodyT | None = None
    stream: AsyncIterator[str] | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def produce_sse(
    first: Sequence[str],
    events: AsyncIterator[str],
    *,
    request_id: str,
    timeout_s: float,
    abort: Callable[[], Awaitable[None]],
    metrics: GuardMetrics,
) -> AsyncIterator[str]:
    """``first`` (sent at once), then ``events`` as the producer makes them, then ``[DONE]``."""
    queue: asyncio.Queue[str | APIError | None] = asyncio.Queue()
    producer = asyncio.create_task(_produce(request_id, events, queue))
    deadline = asyncio.get_running_loop().time() + timeout_s
    finished = failed = False
    try:
        for event in first:
            yield event
        while (item := await _next_event(queue, deadline)) is not None:
            if isinstance(item, APIError):
                raise item
            yield item
        finished = True
    except APIError as error:
        failed = True
        log.warning("stream %s failed: %s (%s)", request_id, error.code, error.status)
        metrics.failures.labels("stream").inc()
        yield sse_error(error)
    finally:
        producer.cancel()
        if not finished:
            if not failed:  # closed from outside: the client went away mid-stream
                metrics.failures.labels("client_disconnected").inc()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(producer, return_exceptions=True)
                await abort()
            log.info("stream %s ended early; engine request aborted", request_id)
    yield DONE


async def _produce(request_id: str, events: AsyncIterator[str], queue: asyncio.Queue[str | APIError | None]) -> None:
    try:
        async for event in events:
            queue.put_nowait(event)
        queue.put_nowait(None)
    except (APIError, EngineError) as exc:
        queue.put_nowait(exc if isinstance(exc, APIError) else from_engine_error(exc))
    except Exception:  # noqa: BLE001 - a bug must still end the stream with an error event
        log.exception("stream %s crashed", request_id)
        queue.put_nowait(APIError("internal server error"))


async def _next_event(queue: asyncio.Queue[str | APIError | None], deadline: float) -> str | APIError | None:
    try:
        async with asyncio.timeout_at(deadline):
            return await queue.get()
    except TimeoutError:
        raise GatewayTimeout("generation timed out", code="generation_timeout") from None
