"""The dispatcher: least busy first, bounded concurrency, a fair bounded queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.config import ScriptedModel
from appliance.dispatch import Dispatcher
from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.workers.scripted import ScriptedWorker


def workers(count: int) -> list[ScriptedWorker]:
    config = ScriptedModel(name="m", backend="scripted", workers=count)
    out = [ScriptedWorker(f"m/{i}", config) for i in range(count)]
    for worker in out:
        worker.healthy = True
    return out


def dispatcher(pool: list[Any], **limits: Any) -> Dispatcher:
    settings = {"max_concurrency": 2, "queue_size": 2, "queue_timeout_s": 1.0, **limits}
    return Dispatcher("m", pool, **settings)


async def test_requests_spread_to_the_least_busy_worker() -> None:
    pool = workers(2)
    d = dispatcher(pool)
    first, second = await d.acquire(), await d.acquire()
    assert first is not second
    assert [w.in_flight for w in pool] == [1, 1]


async def test_idle_workers_take_turns() -> None:
    pool = workers(3)
    d = dispatcher(pool)
    used = []
    for _ in range(6):
        worker = await d.acquire()
        used.append(worker.worker_id)
        d.release(worker)
    assert set(used) == {"m/0", "m/1", "m/2"}


async def test_unhealthy_and_excluded_workers_are_skipped() -> None:
    pool = workers(3)
    pool[0].healthy = False
    d = dispatcher(pool)
    for _ in range(4):
        worker = await d.acquire(exclude=[pool[1]])
        assert worker is pool[2]
        d.release(worker)


async def test_no_healthy_worker_is_503() -> None:
    pool = workers(2)
    for worker in pool:
        worker.healthy = False
    with pytest.raises(ServiceUnavailableError):
        await dispatcher(pool).acquire()


async def test_full_workers_queue_then_429_when_queue_is_full() -> None:
    d = dispatcher(workers(1), max_concurrency=1, queue_size=1)
    await d.acquire()
    waiting = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    assert d.queued == 1
    with pytest.raises(RateLimitError) as caught:
        await d.acquire()
    assert caught.value.status == 429 and caught.value.retry_after == 1
    waiting.cancel()


async def test_released_slot_goes_to_the_longest_waiter() -> None:
    pool = workers(1)
    d = dispatcher(pool, max_concurrency=1, queue_size=5)
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
    assert pool[0].in_flight == 0


async def test_queue_wait_times_out_with_503() -> None:
    d = dispatcher(workers(1), max_concurrency=1, queue_timeout_s=0.05)
    await d.acquire()
    with pytest.raises(ServiceUnavailableError):
        await d.acquire()
    assert d.queued == 0


async def test_cancelled_waiter_leaves_no_slot_behind() -> None:
    pool = workers(1)
    d = dispatcher(pool, max_concurrency=1)
    held = await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    d.release(held)
    assert pool[0].in_flight == 0
    assert d.queued == 0


async def test_worker_becoming_healthy_serves_waiters_on_wake() -> None:
    pool = workers(2)
    pool[1].healthy = False
    d = dispatcher(pool, max_concurrency=1)
    await d.acquire()
    waiter = asyncio.create_task(d.acquire())
    await asyncio.sleep(0)
    pool[1].healthy = True
    d.wake()
    assert await waiter is pool[1]
