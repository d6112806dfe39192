"""First-byte deadlines: one timer for all of a worker's requests, each request's own."""

from __future__ import annotations

import asyncio

import pytest

from appliance.backends.deadlines import Deadlines
from tests.support.poll import until_async


async def wait(deadlines: Deadlines, answer: asyncio.Event) -> str:
    """A request's wait for its response, as ``OpenAIWorker._post`` waits."""
    task = deadlines.start()
    try:
        await answer.wait()
        return "answered"
    except asyncio.CancelledError:
        if deadlines.expired(task):
            return "timed out"
        raise
    finally:
        deadlines.stop(task)


async def test_each_request_times_out_at_its_own_deadline() -> None:
    deadlines = Deadlines(0.6)
    never = asyncio.Event()
    first = asyncio.ensure_future(wait(deadlines, never))
    await asyncio.sleep(0.3)  # the second request begins later: its deadline is later
    second = asyncio.ensure_future(wait(deadlines, never))
    assert await asyncio.wait_for(first, 10) == "timed out"
    assert not second.done(), "the second request's deadline has not come"
    assert await asyncio.wait_for(second, 10) == "timed out"
    deadlines.close()


async def test_answered_requests_are_not_touched_and_the_timer_goes_quiet() -> None:
    deadlines = Deadlines(0.2)
    answer = asyncio.Event()
    answer.set()
    for _ in range(5):
        assert await wait(deadlines, answer) == "answered"
    late = asyncio.Event()
    pending = asyncio.ensure_future(wait(deadlines, late))
    await asyncio.sleep(0.05)
    late.set()
    assert await asyncio.wait_for(pending, 10) == "answered"
    await until_async(lambda: deadlines._watchdog.idle, what="the timer to stop re-arming")
    assert await wait(deadlines, answer) == "answered"  # and it arms again when needed
    deadlines.close()


async def test_a_request_cancelled_by_its_caller_is_not_a_timeout() -> None:
    deadlines = Deadlines(30.0)
    pending = asyncio.ensure_future(wait(deadlines, asyncio.Event()))
    await asyncio.sleep(0.01)
    pending.cancel()  # the client left, or the server stops
    with pytest.raises(asyncio.CancelledError):
        await pending
    deadlines.close()
