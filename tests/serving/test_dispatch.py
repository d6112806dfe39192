"""The dispatcher: least busy first, bounded concurrency, a fair bounded queue, no leaks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from structlog.testing import capture_logs

from appliance.backends.base import Worker
from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.serving.dispatch import Dispatcher
from tests.support.fake_workers import FakeWorker, started_fakes


def dispatcher(
    pool: list[FakeWorker], down: set[Worker] | None = None, **limits: Any
) -> Dispatcher:
    """A dispatcher over ``pool``; workers in ``down`` are unavailable."""
    unavailable = down if down is not None else set()
    settings = {"max_concurrency": 2, "queue_size": 2, "queue_timeout_s": 1.0, **limits}
    return Dispatcher("m", pool, available=lambda w: w not in unavailable, **settings)


def in_flight(d: Dispatcher) -> list[int]:
    return [d.in_flight(w) for w in d.workers]


async def test_requests_spread_to_the_least_busy_worker() -> None:
    d = dispatcher(await started_fakes(2))
    first, second = await d.acquire(), await d.acquire()
    assert first is not second
    assert in_flight(d) == [1, 1]


async def test_idle_workers_take_turns() -> None:
    d = dispatcher(await started_fakes(3))
    used = []
    for _ in range(6):
        worker = await d.acquire()
        used.append(worker.worker_id)
        d.release(worker)
    assert set(used) == {"m/0", "m/1", "m/2"}


async def test_unavailable_and_excluded_workers_are_skipped() -> None:
    pool = await started_fakes(3)
    d = dispatcher(pool, down={pool[0]})
    for _ in range(4):
        worker = await d.acquire(exclude=[pool[1]])
        assert worker is pool[2]
        d.release(worker)


async def test_no_available_worker_is_503() -> None:
    pool = await started_fakes(2)
    with pytest.raises(ServiceUnavailableError):
        await dispatcher(pool, down=set(pool)).acquire()


async def test_without_a_cap_every_request_gets_a_slot_at_once() -> None:
    pool = await started_fakes(1)
    d = dispatcher(pool, max_concurrency=None, queue_size=0)
    held = [await d.acquire() for _ in range(100)]
    assert in_flight(d) == [100] and d.queued == 0
    for worker in held:
        d.release(worker)
    assert in_flight(d) == [0]


async def test_full_workers_queue_then_429_when_queue_is_full() -> None:
    d = dispatcher(await started_fakes(1), max_concurrency=1, queue_size=1)
    await d.acquire()
    waiting = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    assert d.queued == 1
    with pytest.raises(RateLimitError) as caught:
        await d.acquire()
    assert caught.value.status == 429 and caught.value.retry_after == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)


async def test_released_slot_goes_to_the_longest_waiter() -> None:
    d = dispatcher(await started_fakes(1), max_concurrency=1, queue_size=5)
    held = await d.acquire()
    order: list[int] = []

    async def wait(i: int) -> None:
        worker = await d.acquire()
        order.append(i)
        await asyncio.sleep(0)
        d.release(worker)

    tasks = [asyncio.create_task(wait(i)) for i in range(3)]
    await asyncio.sleep(0)
    d.release(held)
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert in_flight(d) == [0]


async def test_queue_wait_times_out_with_503() -> None:
    d = dispatcher(await started_fakes(1), max_concurrency=1, queue_timeout_s=0.05)
    await d.acquire()
    with pytest.raises(ServiceUnavailableError):
        await d.acquire()
    assert d.queued == 0
    assert in_flight(d) == [1]


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    d = dispatcher(await started_fakes(1), max_concurrency=1)
    held = await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    d.release(held)
    assert in_flight(d) == [0]
    assert d.queued == 0


async def test_slot_handed_over_to_a_waiter_cancelled_meanwhile_is_given_back() -> None:
    # The release hands the slot to the waiter's future; the cancellation (an outer
    # deadline, a client gone: Python 3.12's wait_for timeout is one) lands before the
    # waiter runs again, so it never sees the worker it now holds.
    d = dispatcher(await started_fakes(1), max_concurrency=1)
    held = await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    d.release(held)
    waiter.cancel()
    [result] = await asyncio.gather(waiter, return_exceptions=True)
    assert isinstance(result, asyncio.CancelledError)
    assert in_flight(d) == [0]
    assert d.queued == 0


@pytest.mark.parametrize(
    "turns",
    [0, 1, 3],
    ids=["release-before-timeout", "release-then-timeout-same-turn", "timeout-before-release"],
)
async def test_queue_timeout_racing_a_release_leaks_no_slot(turns: int) -> None:
    # The loop is blocked past the waiter's deadline, so its timeout and the release fall
    # due together. With one turn, the release hands the slot over and the timeout fires
    # before the waiter runs again (Python 3.12's wait_for raises TimeoutError then, with
    # the slot in the future). In every order the slot is used or given back.
    d = dispatcher(await started_fakes(1), max_concurrency=1, queue_timeout_s=0.05)
    held = await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    time.sleep(0.1)  # noqa: ASYNC251  (blocking the loop is the point)
    for _ in range(turns):
        await asyncio.sleep(0)
    d.release(held)
    [result] = await asyncio.gather(waiter, return_exceptions=True)
    if isinstance(result, Worker):
        assert turns < 3, "the slot went to a waiter that had already timed out"
        d.release(result)
    else:
        assert isinstance(result, ServiceUnavailableError) and turns == 3
    assert in_flight(d) == [0]
    assert d.queued == 0


async def test_many_waiters_with_deadlines_and_cancellations_leave_no_slot_taken() -> None:
    pool = await started_fakes(2)
    d = dispatcher(pool, max_concurrency=1, queue_size=100, queue_timeout_s=0.02)

    async def client(i: int) -> None:
        try:
            async with asyncio.timeout(0.01 + (i % 5) * 0.005):
                worker = await d.acquire()
        except (TimeoutError, ServiceUnavailableError):
            return
        try:
            await asyncio.sleep(0.005 * (i % 3))  # holding the slot a while: the race
        finally:
            d.release(worker)

    tasks = [asyncio.create_task(client(i)) for i in range(200)]
    for i, task in enumerate(tasks):
        if i % 7 == 0:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert in_flight(d) == [0, 0]
    assert d.queued == 0


async def test_worker_becoming_available_serves_waiters_on_wake() -> None:
    pool = await started_fakes(2)
    down: set[Worker] = {pool[1]}
    d = dispatcher(pool, down=down, max_concurrency=1)
    await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    down.clear()
    d.wake()
    assert await waiter is pool[1]


async def test_a_second_release_is_logged_and_ignored() -> None:
    d = dispatcher(await started_fakes(1))
    worker = await d.acquire()
    d.release(worker)
    with capture_logs() as logs:
        d.release(worker)
    assert in_flight(d) == [0]
    assert [e["event"] for e in logs] == ["slot_released_twice"]
