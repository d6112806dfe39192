"""Choosing a worker: least busy first, bounded concurrency, a bounded fair queue.

Each model has one :class:`Dispatcher`, which owns the model's slots: how many requests
each worker is serving. A request takes a slot on the available worker with the fewest
requests in flight (ties rotate), if that worker is below ``max_concurrency`` (``None``:
no cap). Otherwise it waits in a FIFO queue of at most ``queue_size`` requests for up to
``queue_timeout_s``; a freed slot is handed straight to the longest waiter.

A slot handed to a waiter is either used or given back, on every path: the queue timeout
is the dispatcher's own timer, which never fires for a waiter that already holds a slot,
and a waiter cancelled after the hand-over (an outer deadline, a client gone) returns it.

While the model's workers are coming (a local model loading), requests queue for them
even though none is available yet; if the load fails, :meth:`Dispatcher.fail_waiters`
answers every waiter with the reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import deque
from collections.abc import Callable, Collection, Sequence

import structlog

from appliance.backends.base import Worker
from appliance.errors import RateLimitError, ServiceUnavailableError

log = structlog.get_logger("appliance.dispatch")


class _Waiter:
    """A request waiting for a slot; its future gets a worker, None at the timeout, or an
    error (the model failed to load)."""

    __slots__ = ("exclude", "future")

    def __init__(self, future: asyncio.Future[Worker | None], exclude: Collection[Worker]) -> None:
        self.future = future
        self.exclude = exclude


class Dispatcher:
    """Slots on the workers of one model.

    Args:
        model: The model's name, for messages.
        workers: The model's workers.
        available: Whether a worker may take requests now (the health monitor says).
        max_concurrency: Requests one worker serves at once; ``None``: no cap.
        queue_size: Requests that may wait for a slot.
        queue_timeout_s: Longest wait for a slot.
        coming: Whether workers that are not available yet are on their way (a local
            model loading): requests then wait for them instead of failing at once.
    """

    def __init__(
        self,
        model: str,
        workers: Sequence[Worker],
        *,
        available: Callable[[Worker], bool] = lambda worker: worker.up,
        max_concurrency: int | None,
        queue_size: int,
        queue_timeout_s: float,
        coming: Callable[[], bool] = lambda: False,
    ) -> None:
        self.model = model
        self.coming = coming
        self.workers = list(workers)
        self.available = available
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self._in_flight = dict.fromkeys(self.workers, 0)
        self._waiters: deque[_Waiter] = deque()
        self._turn = itertools.count()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def waiting(self) -> list[asyncio.Future[Worker | None]]:
        """What the requests waiting now are waiting on: each settles when its request
        gets a slot, times out, fails or is cancelled."""
        return [waiter.future for waiter in self._waiters if not waiter.future.done()]

    def in_flight(self, worker: Worker) -> int:
        """Requests ``worker`` is serving now."""
        return self._in_flight[worker]

    def healthy(self) -> list[Worker]:
        """The workers that may take requests now."""
        return [w for w in self.workers if self.available(w)]

    async def acquire(self, exclude: Collection[Worker] = (), session: str | None = None) -> Worker:
        """Take a slot; give it back with :meth:`release`.

        Args:
            exclude: Workers this request already failed on.
            session: With affinity routing, the session whose worker is preferred.

        Raises:
            ServiceUnavailableError: no available worker, or the wait timed out.
            RateLimitError: every slot is taken and the queue is full.
        """
        worker = self._preferred(session, exclude) if session is not None else None
        if worker is None:
            worker = self._pick(exclude)
        if worker is not None:
            self._in_flight[worker] += 1
            return worker
        if not self.coming() and not any(
            self.available(w) and w not in exclude for w in self.workers
        ):
            raise ServiceUnavailableError(
                f"No healthy worker for model '{self.model}' right now.", retry_after=1
            )
        if len(self._waiters) >= self.queue_size:
            raise RateLimitError(
                f"Model '{self.model}' is at capacity and its queue is full; retry shortly.",
                code="model_overloaded",
                retry_after=1,
            )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop.create_future(), exclude)
        self._waiters.append(waiter)
        timer = loop.call_later(self.queue_timeout_s, self._expire, waiter)
        try:
            worker = await waiter.future
        except BaseException:
            # Cancelled (an outer deadline, a client gone) after a slot was handed over:
            # the slot is ours to give back.
            handed = _handed(waiter.future)
            if handed is not None:
                self.release(handed)
            raise
        finally:
            timer.cancel()
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        if worker is None:
            what = (
                f"for model '{self.model}' to load"
                if self.coming()
                else f"for a worker of model '{self.model}'"
            )
            raise ServiceUnavailableError(
                f"Timed out after {self.queue_timeout_s:g}s waiting {what}.", retry_after=1
            )
        return worker

    def fail_waiters(self, error: BaseException) -> int:
        """Answer every request waiting for a slot with ``error``; returns how many."""
        failed = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(error)
                failed += 1
        return failed

    def release(self, worker: Worker) -> None:
        """Give a slot back, handing it to the longest waiter that may use it."""
        if self._in_flight[worker] <= 0:
            log.error("slot_released_twice", worker=worker.worker_id)
            return
        if self.available(worker):
            for waiter in self._waiters:
                if not waiter.future.done() and worker not in waiter.exclude:
                    self._waiters.remove(waiter)
                    waiter.future.set_result(worker)
                    return
        self._in_flight[worker] -= 1
        if self._waiters:
            self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, e.g. after a worker became available."""
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():
                self._waiters.popleft()
                continue
            worker = self._pick(waiter.exclude)
            if worker is None:
                return
            self._waiters.popleft()
            self._in_flight[worker] += 1
            waiter.future.set_result(worker)

    def _expire(self, waiter: _Waiter) -> None:
        """The queue timeout: only a waiter still without a slot times out."""
        if waiter.future.done():
            return
        if waiter in self._waiters:
            self._waiters.remove(waiter)
        waiter.future.set_result(None)

    def _has_room(self, worker: Worker) -> bool:
        cap = self.max_concurrency
        return cap is None or self._in_flight[worker] < cap

    def _preferred(self, session: str, exclude: Collection[Worker]) -> Worker | None:
        """The session's worker by rendezvous hashing over available workers, if it has room.

        While a worker is unavailable its sessions spread over the rest; when it is back,
        the same hash sends them home again.
        """
        best: Worker | None = None
        best_score = -1
        for worker in self.workers:
            if worker in exclude or not self.available(worker):
                continue
            digest = hashlib.blake2b(
                f"{session}\x00{worker.worker_id}".encode(), digest_size=8
            ).digest()
            score = int.from_bytes(digest, "big")
            if score > best_score:
                best, best_score = worker, score
        if best is not None and self._has_room(best):
            return best
        return None

    def _pick(self, exclude: Collection[Worker]) -> Worker | None:
        best: Worker | None = None
        count = len(self.workers)
        start = next(self._turn) % count if count else 0
        for offset in range(count):
            worker = self.workers[(start + offset) % count]
            if worker in exclude or not self._has_room(worker) or not self.available(worker):
                continue
            if best is None or self._in_flight[worker] < self._in_flight[best]:
                best = worker
        return best


def _handed(future: asyncio.Future[Worker | None]) -> Worker | None:
    """The worker a settled future holds, if any."""
    if future.done() and not future.cancelled() and future.exception() is None:
        return future.result()
    return None
