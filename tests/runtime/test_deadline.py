"""Deadline: asyncio.timeout's outcome as a plain context manager."""

from __future__ import annotations

import asyncio

import pytest

from appliance.runtime.deadline import Deadline
from appliance.runtime.timers import Timers


async def test_a_block_that_overruns_raises_timeout_and_the_task_goes_on() -> None:
    with pytest.raises(TimeoutError), Deadline(0.01, Timers()):
        await asyncio.sleep(30)
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # no cancellation left pending


async def test_a_block_within_its_time_and_no_limit_are_untouched() -> None:
    with Deadline(30, Timers()):
        await asyncio.sleep(0)
    with Deadline(None, Timers()):
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)  # the first deadline's timer is gone


async def test_an_error_of_the_block_passes_through() -> None:
    with pytest.raises(TimeoutError, match="the block's own"), Deadline(30, Timers()):
        raise TimeoutError("the block's own")
    with pytest.raises(KeyError), Deadline(30, Timers()):
        raise KeyError("x")


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    """As asyncio.timeout: cancelled by someone else, even after the deadline passed,
    the task is cancelled, not timed out."""
    entered = asyncio.Event()

    async def limited(overrun: bool) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with Deadline(0.01 if overrun else 30, Timers()):
            entered.set()
            while overrun and loop.time() < started + 0.02:
                pass  # past the deadline before the task next waits
            await asyncio.sleep(30)

    for overrun in (False, True):
        entered.clear()
        task = asyncio.ensure_future(limited(overrun))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_it_needs_a_task() -> None:
    def outside() -> None:
        with Deadline(1, Timers()):
            pass

    loop = asyncio.get_running_loop()
    with pytest.raises(RuntimeError):
        await loop.run_in_executor(None, outside)
