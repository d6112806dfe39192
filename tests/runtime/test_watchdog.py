"""Watchdog: one timer for a deadline that moves, calling back once it has truly passed.

Every check of timing is a lower bound on the loop's clock (never early by more than
``EARLY``), which a slow machine cannot break; waiting is polling, and "it did not fire"
is asserted once a probe armed for later has fired (timers run in the order they are due).
"""

from __future__ import annotations

import asyncio
import gc
import weakref

from appliance.runtime.watchdog import EARLY, Watchdog
from tests.support.poll import until_async


def now() -> float:
    return asyncio.get_running_loop().time()


class Fired:
    """A callback that records when (loop time) it was called."""

    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(now())


async def later_than(seconds: float) -> None:
    """Return once a watchdog fed now with ``seconds`` has called back: every timer due
    before then has had its turn."""
    probe = Fired()
    Watchdog(probe, seconds).feed()
    await until_async(lambda: probe.at, what="the probe watchdog to fire")


async def test_it_calls_back_once_when_the_deadline_passed_and_is_idle_then() -> None:
    fired = Fired()
    watchdog = Watchdog(fired, 0.05)
    assert watchdog.idle
    fed = now()
    watchdog.feed()
    assert not watchdog.idle
    await until_async(lambda: fired.at, what="the watchdog to fire")
    assert fired.at[0] >= fed + 0.05 - EARLY, "not early by more than the slack"
    assert watchdog.idle
    await later_than(0.2)
    assert len(fired.at) == 1, "once: nothing more without a new deadline"
    watchdog.feed()  # fed again after it fired: it watches again
    await until_async(lambda: len(fired.at) == 2, what="the second deadline to pass")


async def test_feeding_it_before_the_deadline_moves_the_deadline() -> None:
    """Fed every 10 ms for four times its 0.1 s: it calls back only 0.1 s after a feed,
    never at a deadline a later feed moved (on a machine slow enough to leave a gap of
    0.1 s between feeds, it fires in that gap, and that is right too)."""
    fired, timeline = Fired(), []
    watchdog = Watchdog(fired, 0.1)
    until = now() + 0.4
    while now() < until:
        timeline.append(now())
        watchdog.feed()
        await asyncio.sleep(0.01)  # pacing the feeds, nothing is asserted of it
    last = timeline[-1]
    await until_async(lambda: fired.at and fired.at[-1] >= last, what="the last deadline")
    for at in fired.at:
        fed = max(t for t in timeline if t <= at)
        assert at >= fed + 0.1 - EARLY, f"fired {at - fed:.3f}s after a feed of 0.1s"
    assert len(fired.at) <= len(timeline), "at most once per deadline"
    await later_than(0.3)
    assert fired.at[-1] >= last + 0.1 - EARLY and watchdog.idle


async def test_a_cancelled_watchdog_does_not_call_back() -> None:
    fired = Fired()
    watchdog = Watchdog(fired, 0.05)
    watchdog.feed()
    watchdog.cancel()
    assert watchdog.idle
    await later_than(0.2)
    assert fired.at == []
    watchdog.cancel()  # idle: nothing to do


class Owner:
    """A watchdog's owner, as a stream is: the callback is its method."""

    def __init__(self) -> None:
        self.pings = 0
        self.watchdog = Watchdog(self.ping, 0.05)

    def ping(self) -> None:
        self.pings += 1


async def test_a_closed_watchdog_lets_go_of_its_owner_and_calls_back_no_more() -> None:
    owner = Owner()
    owner.watchdog.feed()
    owner.watchdog.close()
    owner.watchdog.feed()  # a late feed (a read after the stream closed) is harmless
    await later_than(0.2)
    assert owner.pings == 0
    gone = weakref.ref(owner)
    gc.disable()  # freed by reference counting, not by a collection
    try:
        del owner
        assert gone() is None, "the owner and its watchdog no longer hold each other"
    finally:
        gc.enable()


async def test_a_deadline_pushed_later_is_honoured() -> None:
    fired = Fired()
    watchdog = Watchdog(fired)
    start = now()
    watchdog.push(start + 0.05)
    watchdog.push(start + 0.3)  # the timer stays armed for 0.05, and re-arms for the rest
    await until_async(lambda: fired.at, what="the watchdog to fire")
    assert fired.at[0] >= start + 0.3 - EARLY
    await later_than(0.2)
    assert len(fired.at) == 1


async def test_a_deadline_pushed_earlier_is_honoured() -> None:
    fired = Fired()
    watchdog = Watchdog(fired)
    start = now()
    watchdog.push(start + 300)  # past the poll's deadline: only the earlier one can pass
    watchdog.push(start + 0.05)
    await until_async(lambda: fired.at, what="the earlier deadline to pass")
    assert fired.at[0] >= start + 0.05 - EARLY
    assert watchdog.idle, "the timer armed for the first deadline is gone"


async def test_the_callback_may_watch_a_next_deadline() -> None:
    """As a worker's first-byte deadlines do: the callback pushes the next one."""
    fired = Fired()

    def again() -> None:
        fired()
        if len(fired.at) < 3:
            watchdog.push(now() + 0.05)

    watchdog = Watchdog(again)
    watchdog.push(now() + 0.05)
    await until_async(lambda: len(fired.at) == 3, what="three deadlines in turn")
    assert all(b >= a + 0.05 - EARLY for a, b in zip(fired.at, fired.at[1:], strict=False))
    await later_than(0.2)
    assert len(fired.at) == 3 and watchdog.idle


async def test_passed_counts_a_deadline_within_the_slack_as_passed() -> None:
    watchdog = Watchdog(Fired())
    assert watchdog.passed(now())
    assert watchdog.passed(now() + EARLY / 2), "a timer that fires that early is on time"
    assert not watchdog.passed(now() + 10)
