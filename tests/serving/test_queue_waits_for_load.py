"""The dispatcher's queue while a model loads: requests wait, a failed load answers them."""

from __future__ import annotations

import asyncio

import pytest

from appliance.errors import ServiceUnavailableError
from appliance.serving.dispatch import Dispatcher
from tests.support.fake_workers import started_fakes
from tests.support.poll import until_async


async def test_requests_wait_for_workers_that_are_coming() -> None:
    [worker] = await started_fakes(1)
    worker.crash()
    loading = True
    d = Dispatcher(
        "m",
        [worker],
        max_concurrency=1,
        queue_size=4,
        queue_timeout_s=5,
        coming=lambda: loading,
    )
    waiting = asyncio.ensure_future(d.acquire())
    await until_async(lambda: d.queued == 1, what="the request queued")
    assert not waiting.done()
    worker.restart()
    loading = False
    d.wake()
    assert await waiting is worker
    assert d.in_flight(worker) == 1


async def test_without_workers_coming_a_request_fails_at_once() -> None:
    [worker] = await started_fakes(1)
    worker.crash()
    d = Dispatcher("m", [worker], max_concurrency=1, queue_size=4, queue_timeout_s=5)
    with pytest.raises(ServiceUnavailableError, match="No healthy worker"):
        await d.acquire()


async def test_a_failed_load_answers_every_waiter_with_its_reason() -> None:
    [worker] = await started_fakes(1)
    worker.crash()
    d = Dispatcher(
        "m", [worker], max_concurrency=1, queue_size=4, queue_timeout_s=5, coming=lambda: True
    )
    waiters = [asyncio.ensure_future(d.acquire()) for _ in range(3)]
    await until_async(lambda: d.queued == 3, what="three requests queued")
    assert d.fail_waiters(ServiceUnavailableError("failed to load: no such file")) == 3
    for waiter in waiters:
        with pytest.raises(ServiceUnavailableError, match="no such file"):
            await waiter
    assert d.queued == 0 and d.in_flight(worker) == 0


async def test_the_queue_timeout_while_loading_says_so() -> None:
    [worker] = await started_fakes(1)
    worker.crash()
    d = Dispatcher(
        "m", [worker], max_concurrency=1, queue_size=4, queue_timeout_s=0.1, coming=lambda: True
    )
    with pytest.raises(ServiceUnavailableError, match="waiting for model 'm' to load"):
        await d.acquire()
