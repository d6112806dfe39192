"""Timers: many call_laters on one loop timer, late by at most a bucket, never early."""

from __future__ import annotations

import asyncio
import math
import tracemalloc
from typing import Any

from appliance.runtime.deadline import Deadline
from appliance.runtime.timers import NEVER_S, TICK_S, Timers
from appliance.runtime.watchdog import EARLY
from tests.support.poll import until_async


async def test_a_timer_calls_back_after_its_delay_never_before() -> None:
    timers = Timers()
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    armed = loop.time()
    timers.call_later(0.03, lambda: fired.append(loop.time()))
    await until_async(lambda: fired)
    assert fired[0] >= armed + 0.03 - EARLY
    assert len(timers) == 0


async def test_a_cancelled_timer_never_calls_back_and_the_others_still_do() -> None:
    timers = Timers()
    fired: list[str] = []
    kept = timers.call_later(0.02, lambda: fired.append("kept"))
    dropped = timers.call_later(0.02, lambda: fired.append("dropped"))
    dropped.cancel()
    assert len(timers) == 1
    await until_async(lambda: fired)
    await asyncio.sleep(3 * TICK_S)
    assert fired == ["kept"]
    kept.cancel()  # after it fired: nothing happens
    dropped.cancel()


async def test_an_earlier_timer_armed_after_a_later_one_is_not_held_back_by_it() -> None:
    timers = Timers()
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    late = timers.call_later(30, lambda: fired.append("late"))
    started = loop.time()
    timers.call_later(0.02, lambda: fired.append("soon"))
    await until_async(lambda: fired)
    assert fired == ["soon"]
    assert loop.time() - started < 25  # not at the 30 s timer's time
    late.cancel()


async def test_timers_fire_in_the_order_of_their_delays() -> None:
    timers = Timers()
    fired: list[float] = []
    for delay in (0.2, 0.05, 1.5, 0.1):
        timers.call_later(delay, lambda delay=delay: fired.append(delay))  # type: ignore[misc]
    await until_async(lambda: len(fired) == 4)
    assert fired == [0.05, 0.1, 0.2, 1.5]


async def test_a_failing_callback_is_reported_to_the_loop_and_the_rest_still_run() -> None:
    timers = Timers()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    fired: list[str] = []

    def fail() -> None:
        raise ValueError("boom")

    timers.call_later(0.02, fail)
    timers.call_later(0.02, lambda: fired.append("after"))
    try:
        await until_async(lambda: fired and reported)
    finally:
        loop.set_exception_handler(None)
    assert isinstance(reported[0]["exception"], ValueError)
    assert fired == ["after"]


def test_used_from_another_loop_it_starts_afresh() -> None:
    """A timer armed on a loop that ended is dropped; the next loop's still fire."""
    timers = Timers()

    async def arm_and_leave() -> None:
        timers.call_later(30, lambda: None)

    async def arm_and_wait() -> list[str]:
        fired: list[str] = []
        timers.call_later(0.02, lambda: fired.append("fired"))
        await until_async(lambda: fired)
        return fired

    asyncio.run(arm_and_leave())
    assert asyncio.run(arm_and_wait()) == ["fired"]
    assert len(timers) == 0


async def test_arming_and_cancelling_at_the_same_delay_keeps_no_memory() -> None:
    """A request arms and cancels its timers many times a second: what is left behind
    (emptied buckets, due ticks) must not grow with the number of requests."""
    timers = Timers()
    for _ in range(1000):  # warm: the buckets of this second exist
        timers.call_later(300, lambda: None).cancel()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(50_000):
            timers.call_later(300, lambda: None).cancel()
            timers.call_later(0.05, lambda: None).cancel()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, grown  # a tick kept per request would be about 3 MB
    assert len(timers) == 0


async def test_an_infinite_or_astronomical_delay_never_fires_and_raises_nothing() -> None:
    """``timeout_s: .inf`` is a valid config: a limit of none, as ``call_later`` takes it."""
    timers = Timers()
    fired: list[float] = []
    for delay in (math.inf, 1e307, NEVER_S):
        timers.call_later(delay, lambda delay=delay: fired.append(delay))  # type: ignore[misc]
    with Deadline(math.inf, timers):
        await asyncio.sleep(0)
    cancelled = timers.call_later(math.inf, lambda: fired.append(0.0))
    cancelled.cancel()
    timers.call_later(0.02, lambda: fired.append(0.02))
    await until_async(lambda: fired)
    assert fired == [0.02]
    assert len(timers) == 0


class _Clock(asyncio.SelectorEventLoop):
    """A loop whose clock the test moves (hours pass in a moment)."""

    now = 0.0

    def time(self) -> float:
        return self.now


def test_long_delays_keep_a_bounded_number_of_buckets() -> None:
    """A day's model deadline (or a longer one), armed and cancelled by a request every
    tenth of a second for hours: the emptied buckets kept until their time must not grow
    with the hours (one a second would be 86,400, about 26 MB)."""
    timers = Timers()
    loop = _Clock()

    async def requests(hours: float, delay: float) -> None:
        start = loop.now
        for step in range(int(hours * 36_000)):
            loop.now = start + step / 10
            timers.call_later(delay, lambda: None).cancel()

    try:
        loop.run_until_complete(requests(0.1, 86_400))  # warm
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        loop.run_until_complete(requests(3, 86_400))
        loop.run_until_complete(requests(3, 1e8))
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        loop.close()
    assert grown < 256 * 1024, grown  # a bucket a second would be 21,600 (about 6 MB)
    assert len(timers) == 0


async def test_closed_timers_call_nothing_back_and_keep_nothing() -> None:
    timers = Timers()
    fired: list[str] = []
    timers.call_later(0.02, lambda: fired.append("closed"))
    kept = timers.call_later(300, lambda: fired.append("closed"))
    timers.close()
    assert len(timers) == 0
    kept.cancel()  # after the close: nothing happens
    await asyncio.sleep(5 * TICK_S)
    timers.call_later(0.02, lambda: fired.append("after"))  # still usable
    await until_async(lambda: fired)
    assert fired == ["after"]
