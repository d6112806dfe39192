"""One worker's first-byte deadlines, kept by one timer for all its requests.

Each request to an upstream may wait ``first_byte_timeout_s`` for its response to begin.
``asyncio.timeout`` would arm (and cancel) a timer per request, about 4 us under uvloop,
as much as the rest of the worker's own code for the request. Here a request's deadline is
an entry in a dict, and one :class:`~appliance.runtime.watchdog.Watchdog`, watching the
earliest deadline, fires at most once per ``first_byte_timeout_s`` while requests keep
coming: it cancels the requests past their deadline, which take the cancellation back and
raise their timeout, as ``asyncio.timeout`` does (:meth:`Deadlines.expired`).
"""

from __future__ import annotations

import asyncio

from appliance.runtime.watchdog import Watchdog


class Deadlines:
    """The deadlines of the requests now waiting, ``seconds`` after each began."""

    __slots__ = ("_due", "_expired", "_watchdog", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._due: dict[asyncio.Task[object], tuple[float, int]] = {}  # and its cancelling()
        self._expired: dict[asyncio.Task[object], int] = {}
        self._watchdog = Watchdog(self._expire)  # the earliest deadline, or one before it

    def start(self) -> asyncio.Task[object]:
        """The current task's wait begins; returns the task, for :meth:`stop`."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        due = asyncio.get_running_loop().time() + self.seconds
        self._due[task] = (due, task.cancelling())
        if self._watchdog.idle:  # else it watches an earlier deadline
            self._watchdog.push(due)
        return task

    def stop(self, task: asyncio.Task[object]) -> None:
        """The wait ended (however)."""
        self._due.pop(task, None)
        self._expired.pop(task, None)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """Whether the ``CancelledError`` that ``task`` is handling is its deadline's (and
        no one else's): then the cancellation is taken back."""
        cancelling = self._expired.pop(task, None)
        return cancelling is not None and task.uncancel() <= cancelling

    def close(self) -> None:
        self._watchdog.cancel()

    def _expire(self) -> None:
        """Cancel the requests past their deadline; watch the earliest of the others."""
        passed = self._watchdog.passed
        earliest: float | None = None
        for task, (due, cancelling) in list(self._due.items()):
            if passed(due):
                del self._due[task]
                self._expired[task] = cancelling
                task.cancel()
            elif earliest is None or due < earliest:
                earliest = due
        if earliest is not None:
            self._watchdog.push(earliest)
