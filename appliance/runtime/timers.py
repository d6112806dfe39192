"""Timers that are almost always cancelled, kept by one loop timer: :class:`Timers`.

Every request arms a few timers that it nearly always cancels before they fire: its
body's time limit, its model call's, a stream's send limit, the exchange's watch for a
client that leaves. Under uvloop a ``call_later`` and its ``cancel`` cost about 2.2 us
(a ``TimerHandle`` and a libuv timer started and stopped), three to seven times a request.
Here a timer is an entry in a bucket of due times: arming it is a dict insert, cancelling
it a dict removal, and one :class:`~appliance.runtime.watchdog.Watchdog` watches the
earliest bucket.

Timers fire late by at most their bucket's width (and early by at most the watchdog's
``EARLY``): a delay under a second is kept to 10 ms, under a minute to 100 ms, under 1,000 s
to a second, longer ones to a power of ten of at most 1% of the delay (a 300 s model deadline
at 2,000 requests a second then holds 300 buckets, not 30,000; a day's holds at most 1,000,
not 86,400). What they are used for (limits of seconds, a watch after 50 ms) does not need
more. A bucket whose timers were all cancelled stays until its time: the loop timer wakes
at most once per bucket. A delay of :data:`NEVER_S` or more (an infinite limit) never fires.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable

from appliance.runtime.watchdog import EARLY, Watchdog

TICK_S = 0.01
"""A bucket's width for delays under a second; 10 and 100 ticks for longer ones."""

NEVER_S = 1e9
"""A delay this long (about 31 years, ``inf`` included) never fires: no bucket is kept."""

_NEVER = -1  # the key of a timer that never fires: no bucket has it


class Timer:
    """One armed timer: :meth:`cancel` it when what it limits is done."""

    __slots__ = ("_key", "_timers", "callback")

    def __init__(self, timers: Timers, key: int, callback: Callable[[], object]) -> None:
        self._timers = timers
        self._key = key
        self.callback = callback

    def cancel(self) -> None:
        """Never call back (nothing happens if it already did).

        The callback is let go, as a ``TimerHandle`` does: it is usually a method of the
        timer's holder, a cycle the garbage collector would otherwise have to break.
        """
        self._timers._cancel(self._key, self)
        self.callback = _nothing


class Timers:
    """``call_later`` for timers of one event loop that are almost always cancelled.

    Callbacks run on the loop, as a ``call_later``'s do; one that raises is reported to the
    loop's exception handler and the others still run. Used from another loop (a test's
    next one), it starts afresh: what was armed on the old loop is dropped with it.
    """

    __slots__ = ("_buckets", "_keys", "_loop", "_watchdog")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buckets: dict[int, dict[Timer, None]] = {}  # due tick -> its timers
        self._keys: list[int] = []  # a heap of the due ticks (some may be gone)
        self._watchdog = Watchdog(self._fire)

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Call ``callback`` ``delay`` seconds from now (up to a bucket's width later)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._adopt(loop)
        if not delay < NEVER_S:  # inf (a limit of none), or later than the process lives
            return Timer(self, _NEVER, callback)
        # Under 1,000 buckets for any one delay, however long it is: emptied buckets are
        # kept until their time, one per step while requests come.
        step = 1 if delay < 1 else 10 if delay < 60 else 100 if delay < 1000 else _step(delay)
        key = -(-math.ceil((loop.time() + delay) / TICK_S) // step) * step  # rounded up
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = {}
            heapq.heappush(self._keys, key)
            watchdog = self._watchdog
            due = key * TICK_S
            if watchdog.idle or due < watchdog.deadline:
                watchdog.push(due)
        timer = Timer(self, key, callback)
        bucket[timer] = None
        return timer

    def __len__(self) -> int:
        """How many timers are armed."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def close(self) -> None:
        """Drop every timer and the loop timer (their cluster is done): nothing calls back."""
        self._watchdog.close()
        self._watchdog = Watchdog(self._fire)
        self._buckets.clear()
        self._keys.clear()

    def _cancel(self, key: int, timer: Timer) -> None:
        # An emptied bucket stays until its tick comes: dropped and made again by the next
        # request, it would push its tick on the heap once per request.
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.pop(timer, None)

    def _fire(self) -> None:
        """The watchdog's deadline passed: call back every timer now due."""
        loop = self._loop
        assert loop is not None
        keys = self._keys
        now = loop.time() + EARLY
        while keys and keys[0] * TICK_S <= now:
            bucket = self._buckets.pop(heapq.heappop(keys), None)
            for timer in bucket or ():
                callback, timer.callback = timer.callback, _nothing
                try:
                    callback()
                except Exception as error:  # as the loop does for a callback of its own
                    loop.call_exception_handler(
                        {"message": "a timer's callback failed", "exception": error}
                    )
        if keys:
            self._watchdog.push(keys[0] * TICK_S)

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        self.close()
        self._loop = loop


def _step(delay: float) -> int:
    """A bucket's width in ticks for a delay of 1,000 s or more: at most 1% of it."""
    exponent: int = int(math.log10(delay))
    return int(10**exponent)


def _nothing() -> None:
    """A spent or cancelled timer's callback."""
