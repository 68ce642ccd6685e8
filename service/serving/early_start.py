"""``EarlyStart``: a generation started while its prompt is still being scored (``--prompt-check during``).

The engine's outputs are read from the moment the ``EarlyStart`` is made, by a task of its own, into a
buffer that nobody sees until serving iterates it, which it does only after the prompt's check has said
proceed. So the check's latency hides behind the engine's, and no output leaves the server before the
prompt's verdict. A refused prompt, a failed check or a client that leaves ``discard()`` it: the task is
cancelled and the engine request aborted; the buffered text is dropped unread.

Contract: iterate at most once; the iteration yields every output in the engine's order, then raises what
the engine raised, if anything. Closing the iteration early (a blocked stream, a disconnect) stops the
reading task too, so an engine is never left generating for nobody. ``discard()`` is idempotent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class EarlyStart(Generic[T]):
    """Reads ``source`` from now on; see the module docstring. ``on_discard`` aborts the engine request."""

    def __init__(self, source: AsyncIterator[T], on_discard: Callable[[], Awaitable[None]]) -> None:
        self._queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
        self._on_discard = on_discard
        self._discarded = False
        self._iterated = False
        self._task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                self._queue.put_nowait((item, None))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the reader, which raises it where serving expects engine errors
            self._queue.put_nowait((_END, exc))
            return
        self._queue.put_nowait((_END, None))

    async def __aiter__(self) -> AsyncIterator[T]:
        if self._iterated or self._discarded:
            raise RuntimeError("an EarlyStart is iterated once, and never after discard()")
        self._iterated = True
        finished = False
        try:
            while True:
                item, exc = await self._queue.get()
                if item is _END:
                    finished = True
                    if exc is not None:
                        raise exc
                    return
                yield item  # type: ignore[misc]  # everything but _END is a T
        finally:
            if not finished and not self._task.done():
                # The reader stopped first (a blocked stream, a timeout, a client gone): stop reading too.
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)

    async def discard(self) -> None:
        """Stop reading, drop what was read and abort the engine request (once; later calls do nothing)."""
        if self._discarded:
            return
        self._discarded = True
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.shield(self._on_discard())
