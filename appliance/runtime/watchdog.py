"""A deadline that keeps moving, watched by one timer: :class:`Watchdog`.

Some waits begin again and again and almost never reach their limit: a stream's next
read (its idle timeout, the relay's pings), a worker's requests (their first-byte
deadline). A timer per wait (``asyncio.timeout``, a ``call_later`` cancelled when the
wait ends) costs about 2 us under uvloop each time. A watchdog keeps its deadline as a
number instead: moving it is an assignment (:meth:`Watchdog.feed`, :meth:`Watchdog.push`),
and its one timer, when it fires before the deadline it now watches, re-arms itself for
the rest. So it fires at most about once per deadline however often the deadline moved,
and calls back only when the deadline has truly passed (then it is idle until the next
:meth:`~Watchdog.feed` or :meth:`~Watchdog.push`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

EARLY = 0.01
"""A timer may fire this much before its time (the loop takes what is due within its clock's
resolution): a deadline this close counts as passed, rather than re-arming for a sliver."""


class Watchdog:
    """Calls ``callback`` once the deadline it watches has passed.

    The callback is usually a method of the watchdog's owner, and the two refer to each
    other: an owner made per stream or request calls :meth:`close` when done.

    Args:
        callback: Called on the loop when the deadline passed; the watchdog is idle then.
        seconds: How far from now :meth:`feed` moves the deadline.
    """

    __slots__ = ("_at", "_callback", "_deadline", "_handle", "_loop", "seconds")

    # The running loop, looked up when it is armed from idle only: the lookup costs more
    # than the rest of a feed.
    _loop: asyncio.AbstractEventLoop

    def __init__(self, callback: Callable[[], object], seconds: float = 0.0) -> None:
        self.seconds = seconds
        self._callback = callback
        self._deadline = 0.0  # loop time
        self._at = 0.0  # what the timer is armed for: the deadline or before it
        self._handle: asyncio.TimerHandle | None = None

    @property
    def deadline(self) -> float:
        """The deadline watched (loop time), unless :attr:`idle`."""
        return self._deadline

    @property
    def idle(self) -> bool:
        """Whether no deadline is watched (none yet, it passed, or :meth:`cancel`)."""
        return self._handle is None

    def feed(self) -> None:
        """Move the deadline to ``seconds`` from now (a wait begins)."""
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
        deadline = self._deadline = self._loop.time() + self.seconds
        if self._handle is None or deadline < self._at:
            self._arm(deadline)

    def push(self, deadline: float) -> None:
        """Watch ``deadline`` (loop time), later or earlier than the one before."""
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
        self._deadline = deadline
        if self._handle is None or deadline < self._at:
            self._arm(deadline)

    def passed(self, deadline: float) -> bool:
        """Whether ``deadline`` (loop time) has come, give or take a timer's :data:`EARLY`."""
        return asyncio.get_running_loop().time() >= deadline - EARLY

    def cancel(self) -> None:
        """Stop watching, until the next :meth:`feed` or :meth:`push`."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def close(self) -> None:
        """Stop watching for good, and let go of the callback: its owner and the watchdog
        are then freed as soon as they are unused, not by the garbage collector later
        (which cost 6 us a stream, 10%, in ``bench/relay.py``)."""
        self.cancel()
        self._callback = _nothing

    def _arm(self, deadline: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = deadline
        self._handle = self._loop.call_at(deadline, self._check)

    def _check(self) -> None:
        """The timer fired: call back if the deadline passed, else wait for the rest."""
        self._handle = None
        if self.passed(self._deadline):
            self._callback()
        else:
            self._arm(self._deadline)


def _nothing() -> None:
    """A closed watchdog's callback."""
