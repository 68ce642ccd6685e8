"""DynamicBatcher under cancellation (issue 11's first code defect) and its health record.

* Regression: a batch fails, is retried one item at a time, and a caller is cancelled while its
  own retry is in the model call; the retry then fails. ``set_exception`` on the cancelled
  future raised ``InvalidStateError``, which ended the batcher task: every later request failed.
* Property (hypothesis): callers cancelled at any await of their life (queued, collected, in a
  batch call, in a solo retry), with the model failing on chosen items, never stop the batcher,
  and every caller that stays gets its own result or its own error.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.batching import DynamicBatcher


def _batcher(fn, **kw) -> DynamicBatcher:
    args = dict(max_batch_size=4, max_wait_s=0.01, max_queue=64, queue_timeout_s=5.0)
    args.update(kw)
    return DynamicBatcher(fn, **args)


@pytest.mark.reliability("batcher", "caller cancelled during its solo retry, retry fails", "batcher keeps serving")
async def test_cancel_during_failed_solo_retry_does_not_kill_the_batcher() -> None:
    in_solo = threading.Event()
    release = threading.Event()

    def fn(items: list[int]) -> list[int]:
        if len(items) > 1:
            raise RuntimeError("batch failed")  # -> one item at a time
        if items == [1]:
            in_solo.set()
            assert release.wait(5)
            raise RuntimeError("item 1 fails alone too")
        return [i * 10 for i in items]

    b = _batcher(fn, max_wait_s=0.2)
    b.start()
    try:
        first = asyncio.create_task(b.submit(1))
        second = asyncio.create_task(b.submit(2))
        await asyncio.to_thread(in_solo.wait, 5)
        first.cancel()  # the caller leaves while its retry is in the model call
        await asyncio.sleep(0.01)
        release.set()
        assert (await asyncio.wait_for(second, 5))[0] == 20  # bounded: a dead batcher hangs it
        assert b.running  # before the fix the task had died with InvalidStateError
        value, _ = await asyncio.wait_for(b.submit(3), 5)
        assert value == 30
    finally:
        release.set()
        await b.stop()


@pytest.mark.reliability("batcher", "health: a failing model call, then a good one", "last_call_failed set, then cleared")
async def test_health_records_failed_and_running_calls() -> None:
    fail = True
    gate = threading.Event()

    def fn(items: list[int]) -> list[int]:
        gate.wait(5)
        if fail:
            raise RuntimeError("down")
        return items

    b = _batcher(fn, isolate_failures=False)
    b.start()
    try:
        gate.set()
        with pytest.raises(RuntimeError):
            await b.submit(1)
        assert b.health.last_call_failed and b.health.busy_s == 0.0
        fail = False
        gate.clear()
        pending = asyncio.create_task(b.submit(2))
        await asyncio.sleep(0.2)
        assert b.health.busy_s >= 0.1  # a call in progress (a hung classifier shows this growing)
        gate.set()
        await pending
        assert not b.health.last_call_failed and b.health.running
    finally:
        gate.set()
        await b.stop()


# One caller: its item, whether the model fails on it, and when (if ever) it is cancelled:
# None = never; otherwise after that many event-loop steps (0 = before the first await).
_callers = st.lists(
    st.tuples(st.booleans(), st.one_of(st.none(), st.integers(0, 12))), min_size=1, max_size=10
)


@pytest.mark.reliability("batcher", "property: cancellation at every await, failing items", "batcher survives; each stayer gets its own outcome")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(callers=_callers, max_batch=st.integers(1, 4), isolate=st.booleans())
def test_cancellation_anywhere_never_stops_the_batcher(callers, max_batch: int, isolate: bool) -> None:
    asyncio.run(_run_property(callers, max_batch, isolate))


async def _run_property(callers, max_batch: int, isolate: bool) -> None:
    failing = {i for i, (fails, _) in enumerate(callers) if fails}

    def fn(items: list[int]) -> list[int]:
        if any(i in failing for i in items):
            raise RuntimeError(f"fails on {sorted(set(items) & failing)}")
        return [i + 1000 for i in items]

    b = _batcher(fn, max_batch_size=max_batch, max_wait_s=0.0, isolate_failures=isolate)
    b.start()
    try:
        tasks = [asyncio.create_task(b.submit(i)) for i in range(len(callers))]

        async def cancel_later(task: asyncio.Task, steps: int) -> None:
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()

        cancellers = [asyncio.create_task(cancel_later(t, s))
                      for t, (_, s) in zip(tasks, callers) if s is not None]
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        await asyncio.gather(*cancellers)
        for i, result in enumerate(results):
            if isinstance(result, asyncio.CancelledError):
                assert callers[i][1] is not None  # only a cancelled caller sees a cancellation
            elif isinstance(result, BaseException):
                assert isinstance(result, RuntimeError), repr(result)
                # with isolation only the failing item's own caller fails
                assert (i in failing) or not isolate, (i, failing)
            else:
                assert result[0] == i + 1000
        assert b.running
        value, _ = await asyncio.wait_for(b.submit(99), 5)  # still serving
        assert value == 1099
    finally:
        await b.stop()
