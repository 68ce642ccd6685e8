"""DynamicBatcher: gathering, budgets, error fan-out, cancellation, 429 and 504."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.batching import DynamicBatcher
from service.errors import GatewayTimeout, Overloaded, ServiceUnavailable


class Recorder:
    """A batch function that records the batches it saw and can block or fail."""

    def __init__(self, fail: bool = False, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(5), "test gate never opened"
        if self.fail:
            raise RuntimeError("model exploded")
        return [i * 10 for i in items]


def _batcher(fn, **kw) -> DynamicBatcher:
    args = dict(max_batch_size=8, max_wait_s=0.05, max_queue=64, queue_timeout_s=5.0)
    args.update(kw)
    return DynamicBatcher(fn, **args)


async def test_gathers_concurrent_requests_into_one_batch() -> None:
    fn = Recorder()
    b = _batcher(fn, max_batch_size=8, max_wait_s=0.2)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(8)))
    finally:
        await b.stop()
    assert [r for r, _ in results] == [i * 10 for i in range(8)]
    assert fn.batches == [list(range(8))]  # the model saw all N in one call
    assert all(t.batch_size == 8 and t.queue_s >= 0 and t.inference_s >= 0 for _, t in results)


async def test_batch_closes_at_max_size() -> None:
    fn = Recorder()
    b = _batcher(fn, max_batch_size=3, max_wait_s=0.2)
    b.start()
    try:
        await asyncio.gather(*(b.submit(i) for i in range(7)))
    finally:
        await b.stop()
    assert [len(x) for x in fn.batches] == [3, 3, 1]


async def test_cost_budget_splits_batches() -> None:
    fn = Recorder()
    b = _batcher(fn, max_batch_size=8, max_wait_s=0.2, cost=lambda i: i, max_batch_cost=5)
    b.start()
    try:
        await asyncio.gather(*(b.submit(i) for i in (2, 2, 2, 9, 1)))
    finally:
        await b.stop()
    # 2+2 fits, +2 would be 6 > 5; 2 then 9 > 5 alone (an oversize item still runs, alone).
    assert fn.batches == [[2, 2], [2], [9], [1]]


async def test_error_reaches_every_caller_and_batcher_survives() -> None:
    fn = Recorder(fail=True)
    b = _batcher(fn, max_wait_s=0.1)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(4)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "exploded" in str(r) for r in results)
        fn.fail = False
        value, _ = await b.submit(5)
        assert value == 50
    finally:
        await b.stop()


async def test_wrong_number_of_results_fails_clearly() -> None:
    b = _batcher(lambda items: items[:-1], max_wait_s=0.1, isolate_failures=False)
    b.start()
    try:
        results = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
    finally:
        await b.stop()
    assert all(isinstance(r, RuntimeError) and "1 results for 2 items" in str(r) for r in results)


async def test_cancelled_caller_mid_batch_does_not_stop_batcher() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = _batcher(fn, max_wait_s=0.05)
    b.start()
    try:
        tasks = [asyncio.create_task(b.submit(i)) for i in range(3)]
        await asyncio.to_thread(fn.entered.wait, 5)  # the batch is inside the model call
        tasks[1].cancel()
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], asyncio.CancelledError)
        assert results[0][0] == 0 and results[2][0] == 20
        value, _ = await b.submit(7)  # still serving
        assert value == 70 and b.running
    finally:
        gate.set()
        await b.stop()


async def test_cancelled_before_batch_never_takes_a_slot() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = _batcher(fn, max_batch_size=2, max_wait_s=0.0)
    b.start()
    try:
        first = asyncio.create_task(b.submit(1))
        await asyncio.to_thread(fn.entered.wait, 5)  # worker busy with [1]
        doomed = asyncio.create_task(b.submit(2))
        live = asyncio.create_task(b.submit(3))
        await asyncio.sleep(0.01)
        doomed.cancel()
        gate.set()
        assert (await first)[0] == 10 and (await live)[0] == 30
    finally:
        gate.set()
        await b.stop()
    assert [2] not in fn.batches and all(2 not in batch for batch in fn.batches)


async def test_full_queue_answers_429() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = _batcher(fn, max_batch_size=1, max_wait_s=0.0, max_queue=2)
    b.start()
    try:
        running = asyncio.create_task(b.submit(0))
        await asyncio.to_thread(fn.entered.wait, 5)
        queued = [asyncio.create_task(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as info:
            await b.submit(3)
        assert info.value.status == 429
        gate.set()
        await asyncio.gather(running, *queued)
    finally:
        gate.set()
        await b.stop()


async def test_queue_timeout_answers_504() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = _batcher(fn, max_batch_size=1, max_wait_s=0.0, queue_timeout_s=0.1)
    b.start()
    try:
        running = asyncio.create_task(b.submit(0))
        await asyncio.to_thread(fn.entered.wait, 5)
        with pytest.raises(GatewayTimeout) as info:
            await b.submit(1)  # the worker is stuck on item 0
        assert info.value.status == 504
        gate.set()
        assert (await running)[0] == 0
    finally:
        gate.set()
        await b.stop()
    assert all(1 not in batch for batch in fn.batches)  # the timed-out item never ran


async def test_stop_fails_waiting_callers_and_submit_needs_start() -> None:
    b = _batcher(Recorder())
    with pytest.raises(ServiceUnavailable):
        await b.submit(1)
    b.start()
    await b.stop()
    assert not b.running
    with pytest.raises(ServiceUnavailable):
        await b.submit(1)


@pytest.mark.parametrize(
    "kw",
    [{"max_batch_size": 0}, {"max_wait_s": -1}, {"max_queue": 0}, {"queue_timeout_s": 0},
     {"max_batch_cost": 0}],
)
def test_rejects_bad_knobs(kw: dict) -> None:
    with pytest.raises(ValueError):
        _batcher(Recorder(), **kw)


async def test_one_bad_item_fails_only_its_caller() -> None:
    def fn(items: list[int]) -> list[int]:
        if 13 in items:
            raise ValueError("item 13 is poison")
        return [i * 10 for i in items]

    b = _batcher(fn, max_wait_s=0.1)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in (1, 13, 2)), return_exceptions=True)
    finally:
        await b.stop()
    assert results[0][0] == 10 and results[2][0] == 20
    assert isinstance(results[1], ValueError)
    assert results[0][1].batch_size == 1  # answered by the one-at-a-time retry


async def test_without_isolation_the_batch_error_reaches_all() -> None:
    fn = Recorder(fail=True)
    b = _batcher(fn, max_wait_s=0.1, isolate_failures=False)
    b.start()
    try:
        results = await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)
    finally:
        await b.stop()
    assert all(isinstance(r, RuntimeError) for r in results) and len(fn.batches) == 1


async def test_stop_fails_the_batch_in_flight() -> None:
    gate = threading.Event()
    fn = Recorder(gate=gate)
    b = _batcher(fn, max_wait_s=0.0)
    b.start()
    task = asyncio.create_task(b.submit(1))
    await asyncio.to_thread(fn.entered.wait, 5)
    await b.stop()
    gate.set()
    with pytest.raises(ServiceUnavailable):
        await task
