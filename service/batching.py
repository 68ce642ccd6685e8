"""Cross-request dynamic batching of blocking model calls.

``DynamicBatcher(fn, ...)`` owns an ``asyncio.Queue``, one future per submitted item and **one**
background task (``start()``/``stop()``, called by the app lifespan). A batch closes when it holds
``max_batch_size`` items, when adding the next item would exceed ``max_batch_cost`` (e.g. an image
budget), or ``max_wait_s`` after its first item was queued; the wait is adaptive (``_collect``): a
first item that finds nothing else queued goes at once, and only a batch that is filling waits.
``fn(items) -> results`` runs in a single worker thread so the event loop keeps serving; it must
return one result per item.

Failure contract:
* queue full → ``Overloaded`` (429) at once;
* not picked up by a batch within ``queue_timeout_s`` → ``GatewayTimeout`` (504);
* ``fn`` raises or returns the wrong number of results → the batch is retried one item at a
  time (``isolate_failures``), so an item that makes ``fn`` fail fails only its own caller and
  a broken model fails every caller; with ``isolate_failures=False`` the batch's exception goes
  straight to every caller. STYLE.md section 3 asks for the latter; the retry is the default
  because one client's bad input must not fail the other requests batched with it.
* a caller cancelled while waiting (client disconnect, guard timeout) has its future cancelled;
  the batcher skips it before it takes a batch slot, and every completion goes through
  ``_settle``, which checks ``done()`` *after* the await that produced the value: a caller can
  be cancelled during any await, and ``set_result``/``set_exception`` on a cancelled future
  raises ``InvalidStateError``, which would end the one batcher task (issue 11).
* the batcher records the outcome of its model calls (``health``): whether the last one failed
  and how long the current one has been running, so ``/health`` can report a broken or hung
  classifier.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.config import BatcherConfig
from service.errors import GatewayTimeout, Overloaded, ServiceUnavailable

T = TypeVar("T")
R = TypeVar("R")
log = logging.getLogger("spaguard.batching")


@dataclass(frozen=True)
class BatchTiming:
    """Seconds one item spent queued and in the model call, and the size of its batch."""

    queue_s: float
    inference_s: float
    batch_size: int


@dataclass(frozen=True)
class BatcherHealth:
    """What ``/health`` reports about the classifier calls (``DynamicBatcher.health``)."""

    running: bool  # the background task is alive
    last_call_failed: bool  # the latest model call raised (cleared by the next that succeeds)
    busy_s: float  # how long the model call in progress has run; 0.0 when idle


@dataclass
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[tuple[R, BatchTiming]]
    enqueued: float
    started: bool = False
    cost: int = field(default=1)


class DynamicBatcher(Generic[T, R]):
    """Batch items from concurrent callers into calls of ``fn``; see the module docstring."""

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        queue_timeout_s: float,
        *,
        cost: Callable[[T], int] | None = None,
        max_batch_cost: int | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        isolate_failures: bool = True,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        if queue_timeout_s <= 0:
            raise ValueError(f"queue_timeout_s must be > 0, got {queue_timeout_s}")
        if max_batch_cost is not None and max_batch_cost < 1:
            raise ValueError(f"max_batch_cost must be >= 1, got {max_batch_cost}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._cost = cost
        self._max_cost = max_batch_cost
        self._on_batch = on_batch  # (batch size, queue depth after forming) for metrics
        self._queue: asyncio.Queue[_Entry[T, R]] | None = None
        self._carry: _Entry[T, R] | None = None  # item that did not fit the last batch's budget
        self._task: asyncio.Task[None] | None = None
        self._inflight: list[_Entry[T, R]] = []  # the batch in the model call (failed on stop)
        self.isolate_failures = isolate_failures
        self._executor: ThreadPoolExecutor | None = None
        self._call_started: float | None = None  # perf_counter() of the model call in progress
        self._last_call_failed = False

    @classmethod
    def from_config(
        cls,
        fn: Callable[[list[T]], Sequence[R]],
        config: BatcherConfig,
        *,
        cost: Callable[[T], int] | None = None,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> DynamicBatcher[T, R]:
        """A batcher with ``config``'s limits (``ServeSettings.batcher_config()``)."""
        return cls(
            fn, config.max_batch_size, config.max_wait_s, config.max_queue, config.queue_timeout_s,
            cost=cost, max_batch_cost=config.max_batch_cost, on_batch=on_batch,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the queue and the one background task (inside a running loop)."""
        if self._task is not None:
            raise RuntimeError("DynamicBatcher already started")
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guard-batch")
        self._task = asyncio.create_task(self._run(), name="guard-batcher")

    async def stop(self) -> None:
        """Stop the task and fail every waiting caller with 503."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        pending = [*self._inflight, *([self._carry] if self._carry else [])]
        self._carry, self._inflight = None, []
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        _fail(pending, ServiceUnavailable("guard batcher stopped"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def health(self) -> BatcherHealth:
        started = self._call_started
        busy = 0.0 if started is None else time.perf_counter() - started
        return BatcherHealth(self.running, self._last_call_failed, busy)

    @property
    def depth(self) -> int:
        return (self._queue.qsize() if self._queue else 0) + (1 if self._carry else 0)

    # --- callers --------------------------------------------------------------------------------

    async def submit(self, item: T) -> tuple[R, BatchTiming]:
        """Queue ``item`` and wait for its result; raises per the module docstring."""
        if self._queue is None or not self.running:
            raise ServiceUnavailable("guard batcher is not running")
        loop = asyncio.get_running_loop()
        entry: _Entry[T, R] = _Entry(item, loop.create_future(), time.perf_counter())
        entry.cost = self._cost(item) if self._cost else 1
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            raise Overloaded("guard queue is full; retry later") from None
        try:
            await asyncio.wait({entry.future}, timeout=self.queue_timeout_s)
            if not entry.future.done() and not entry.started:
                raise GatewayTimeout("guard queue wait timed out")
            return await entry.future
        finally:
            # Cancelled caller or queue timeout: the batcher skips done futures.
            if not entry.future.done():
                entry.future.cancel()

    # --- background task ------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._execute(batch)

    async def _next_live(self, timeout: float | None) -> _Entry[T, R] | None:
        """The next entry whose caller still waits, or None when ``timeout`` passes."""
        assert self._queue is not None
        while True:
            if self._carry is not None:
                entry, self._carry = self._carry, None
            elif not self._queue.empty():
                entry = self._queue.get_nowait()
            elif timeout is None:
                entry = await self._queue.get()
            elif timeout <= 0:
                return None
            else:
                try:
                    entry = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    return None
            if entry.future.done():  # cancelled caller: never takes a batch slot
                continue
            if time.perf_counter() - entry.enqueued > self.queue_timeout_s:
                _settle(entry, GatewayTimeout("guard queue wait timed out"))
                continue
            return entry

    async def _collect(self) -> list[_Entry[T, R]]:
        """The next batch: the first live item, everything already queued behind it, and (only while the
        batch is filling) what arrives before ``max_wait_s`` after the first item was queued.

        NOTE: the wait is adaptive (issue 15: +5 ms per check at one client, two or three checks a request).
        A first item found alone (nothing else queued, nothing in flight: the model is idle, since this task
        runs one call at a time) goes at once, because waiting for company that is not coming only adds
        latency. Once a second item is in, other callers are active and the batch waits for more, up to the
        first item's deadline. The deadline counts from when the first item was *queued*, so an item that
        already waited out a busy model call does not wait again: under load a batch is what queued during
        the previous call.
        """
        first = await self._next_live(None)
        assert first is not None
        batch, cost = [first], first.cost
        deadline = first.enqueued + self.max_wait_s
        while len(batch) < self.max_batch_size:
            # Items already queued always join (no wait); a wait only while the batch is filling.
            wait = deadline - time.perf_counter() if len(batch) > 1 else 0.0
            entry = await self._next_live(wait)
            if entry is None:
                break
            if self._max_cost is not None and cost + entry.cost > self._max_cost:
                self._carry = entry  # over budget: first in the next batch
                break
            batch.append(entry)
            cost += entry.cost
        return batch

    async def _call(self, items: list[T]) -> Sequence[R]:
        loop = asyncio.get_running_loop()
        self._call_started = time.perf_counter()
        try:
            results = await loop.run_in_executor(self._executor, self.fn, items)
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except Exception:
            self._last_call_failed = True
            raise
        finally:
            self._call_started = None
        self._last_call_failed = False
        return results

    async def _execute(self, batch: list[_Entry[T, R]]) -> None:
        started = time.perf_counter()
        self._inflight = batch
        for entry in batch:
            entry.started = True
        if self._on_batch is not None:
            self._on_batch(len(batch), self.depth)
        # ``_inflight`` is left set when this task is cancelled mid-call, so ``stop()`` can fail
        # the callers of the batch that was in the model call.
        try:
            results = await self._call([e.item for e in batch])
        except Exception as exc:  # noqa: BLE001 - handled per the module docstring
            log.warning("guard batch of %d failed: %s", len(batch), type(exc).__name__)
            if len(batch) > 1 and self.isolate_failures:
                await self._execute_alone(batch, started)
            else:
                _fail(batch, exc)
            self._inflight = []
            return
        self._inflight = []
        inference = time.perf_counter() - started
        for entry, result in zip(batch, results, strict=True):
            _settle(entry, (result, BatchTiming(started - entry.enqueued, inference, len(batch))))

    async def _execute_alone(self, batch: list[_Entry[T, R]], started: float) -> None:
        """Retry a failed batch one item at a time, so one bad item (say, an image that crashes
        OCR) fails only its own caller, not every request that shared its batch."""
        self._inflight = batch
        for entry in batch:
            if entry.future.done():
                continue
            try:
                (result,) = await self._call([entry.item])
            except Exception as exc:  # noqa: BLE001 - this item's own failure
                _settle(entry, exc)  # its caller may have gone during the await
                continue
            _settle(entry, (result, BatchTiming(started - entry.enqueued, time.perf_counter() - started, 1)))


def _settle(entry: _Entry[T, R], outcome: tuple[R, BatchTiming] | BaseException) -> None:
    """Complete ``entry``'s future unless its caller already left (see the module docstring)."""
    if entry.future.done():
        return
    if isinstance(outcome, BaseException):
        entry.future.set_exception(outcome)
    else:
        entry.future.set_result(outcome)


def _fail(entries: list[_Entry[T, R]], exc: BaseException) -> None:
    for entry in entries:
        _settle(entry, exc)
