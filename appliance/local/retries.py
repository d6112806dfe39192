"""When a local model's workers are tried again: failed loads in a row, back-off, timers.

The lifecycle (:mod:`appliance.local.lifecycle`) decides; this counts and keeps time.
A child that failed to load is tried again after 1 s, doubling to 30 s; one that served
and then exited is started again after 1 s; a worker that came up starts its count over.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

_MAX_BACKOFF_S = 30.0


class Loadable(Protocol):
    """A worker that can be told to start a child (:class:`.worker.LocalWorker`)."""

    def load(self) -> None: ...


class Retries:
    """Failed loads in a row per worker, and the timers that will load them again."""

    def __init__(self) -> None:
        self._failures: dict[object, int] = {}
        self._timers: dict[object, asyncio.Task[None]] = {}

    @property
    def most(self) -> int:
        """The longest run of failed loads among the workers."""
        return max(self._failures.values(), default=0)

    def failed(self, worker: object) -> int:
        """``worker`` failed to load once more; returns its failures in a row."""
        self._failures[worker] = self._failures.get(worker, 0) + 1
        return self._failures[worker]

    def came_up(self, worker: object) -> None:
        """``worker`` loaded: its count starts over."""
        self._failures.pop(worker, None)

    def forget(self) -> None:
        """Every count starts over and no timer runs (an unload, an admin load)."""
        self.cancel()
        self._failures.clear()

    @staticmethod
    def delay(failures: int) -> float:
        """How long to wait before the next try after ``failures`` in a row (0: served)."""
        return min(2.0 ** max(0, failures - 1), _MAX_BACKOFF_S)

    def schedule(self, worker: Loadable, delay: float, again: Callable[[], bool]) -> None:
        """Load ``worker`` after ``delay`` if ``again()`` still says so then."""

        async def later() -> None:
            await asyncio.sleep(delay)
            if again():
                worker.load()

        previous = self._timers.pop(worker, None)
        if previous is not None:
            previous.cancel()
        self._timers[worker] = detached(later())

    def cancel(self) -> None:
        """Stop every timer."""
        for task in self._timers.values():
            task.cancel()
        self._timers.clear()


def detached(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task outside the request that started it: its logs (and the workers it starts,
    which outlive the request) do not carry that request's id."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
