"""DynamicBatcher's adaptive wait: a lone item at an idle model goes at once; a filling batch still waits.

Issue 15: with a fixed wait every guard check at one client waited ``max_wait_s`` for company that never
came (two or three checks per request). The waits here are long (0.3-1 s) so that a batcher that still
waited would fail the timing bounds by a wide margin even on a loaded 2-core box.
"""

from __future__ import annotations

import asyncio
import threading
import time

from service.batching import DynamicBatcher


class Recorder:
    """Records its batches; blocks on ``gate`` (when given) so a test can hold the model busy."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5), "test gate never opened"
        return [i * 10 for i in items]


def _batcher(fn: Recorder, max_wait_s: float, max_batch_size: int = 8) -> DynamicBatcher[int, int]:
    return DynamicBatcher(fn, max_batch_size=max_batch_size, max_wait_s=max_wait_s, max_queue=64, queue_timeout_s=10.0)


async def test_lone_item_at_an_idle_model_is_dispatched_at_once() -> None:
    fn = Recorder()
    b = _batcher(fn, max_wait_s=1.0)
    b.start()
    try:
        t = time.perf_counter()
        value, timing = await asyncio.wait_for(b.submit(7), 5)
        elapsed = time.perf_counter() - t
    finally:
        await b.stop()
    assert value == 70 and fn.batches == [[7]] and timing.batch_size == 1
    assert elapsed < 0.5 and timing.queue_s < 0.5  # a fixed wait would have held it for the full 1.0 s


async def test_item_arriving_after_a_lone_one_does_not_hold_it_back() -> None:
    fn = Recorder()
    b = _batcher(fn, max_wait_s=1.0)
    b.start()
    try:
        t = time.perf_counter()
        first = asyncio.create_task(b.submit(1))
        await asyncio.to_thread(fn.entered.wait, 5)  # the lone first item is already in the model call
        assert time.perf_counter() - t < 0.5  # it did not sit out max_wait_s (1.0 s) first
        second = await asyncio.wait_for(b.submit(2), 5)
        assert (await first)[0] == 10 and second[0] == 20
    finally:
        await b.stop()
    assert fn.batches == [[1], [2]]


async def test_concurrent_items_still_share_one_batch() -> None:
    fn = Recorder()
    b = _batcher(fn, max_wait_s=0.3)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(6)))
    finally:
        await b.stop()
    assert [r for r, _ in results] == [i * 10 for i in range(6)]
    assert fn.batches == [list(range(6))]


async def test_a_filling_batch_waits_for_late_company() -> None:
    fn = Recorder()
    b = _batcher(fn, max_wait_s=1.0)
    b.start()
    try:
        early = [asyncio.create_task(b.submit(i)) for i in (0, 1)]  # two callers: the batch is filling
        await asyncio.sleep(0.1)
        late = await asyncio.wait_for(b.submit(2), 5)
        assert [(await t)[0] for t in early] == [0, 10] and late[0] == 20
    finally:
        await b.stop()
    assert fn.batches == [[0, 1, 2]]


async def test_items_queued_behind_a_busy_model_batch_without_waiting_again() -> None:
    gate = threading.Event()
    fn = Recorder(gate)
    b = _batcher(fn, max_wait_s=1.0)
    b.start()
    try:
        busy = asyncio.create_task(b.submit(0))
        await asyncio.to_thread(fn.entered.wait, 5)
        queued = [asyncio.create_task(b.submit(i)) for i in (1, 2, 3)]
        await asyncio.sleep(1.2)  # they wait out the busy call, longer than max_wait_s
        gate.set()
        released = time.perf_counter()
        values = [(await asyncio.wait_for(t, 5))[0] for t in queued]
        after_release = time.perf_counter() - released
        assert (await busy)[0] == 0 and values == [10, 20, 30]
    finally:
        gate.set()
        await b.stop()
    assert fn.batches == [[0], [1, 2, 3]]  # still one batch for everything that queued during the call
    assert after_release < 0.6  # their deadline had passed: no second wait of max_wait_s (1.0 s)
