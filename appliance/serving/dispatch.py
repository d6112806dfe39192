"""Choosing a worker: least busy first, bounded concurrency, a bounded scheduled queue.

Each model has one :class:`Dispatcher`, which owns the model's slots: how many requests
each worker is serving. A request takes a slot on the available worker with the fewest
requests in flight (ties rotate), if that worker is below ``max_concurrency`` (``None``:
no cap): a free slot is taken at once, whatever waits. Otherwise it waits in a queue of at
most ``queue_size`` requests for up to ``queue_timeout_s``; a freed slot is handed
straight to the waiter the queue's rules name next (:mod:`.scheduling`: priority
classes, a fair share between keys, a reserved share for lower classes).

The dispatcher also knows how long a request would wait now (:meth:`Dispatcher.
expected_wait_s`): its place in the queue times the mean time a request holds a slot,
measured by Little's law over the recent requests. Routes spill on it, and a 429 (full
queue) or 503 (queue timeout) carries it as ``Retry-After``.

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
import time
from collections.abc import Callable, Collection, Sequence

import structlog

from appliance.backends.base import Worker
from appliance.config import Priority
from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.serving.scheduling import PRIORITIES, RANK, FairQueue, Ticket

log = structlog.get_logger("appliance.dispatch")

# Little's law over about the last this many requests (halved when reached).
_WINDOW = 64


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
        clock: Monotonic seconds, for the service time (tests pass their own).
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.coming = coming
        self.workers = list(workers)
        self.available = available
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self._in_flight = dict.fromkeys(self.workers, 0)
        self._waiters = FairQueue()
        self._turn = itertools.count()
        # Little's law: slot-seconds held and requests done, over the recent requests.
        self._clock = clock
        self._busy = 0
        self._since = clock()
        self._held_s = 0.0
        self._done = 0.0

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

    def service_s(self) -> float | None:
        """The mean time a request holds a slot over the recent ones (Little's law: the
        slot-seconds held, those of requests still running included, per request done);
        None before any request gave its slot back."""
        if not self._done:
            return None
        held = self._held_s + self._busy * (self._clock() - self._since)
        return held / self._done

    def expected_wait_s(self, priority: Priority = "standard") -> float | None:
        """How long a request of class ``priority`` would wait for a slot now: 0 with one
        free (or no cap), else its place in the queue times the mean service time,
        shared over the slots; None when every slot is taken and no request has given
        one back yet (unknown)."""
        cap = self.max_concurrency
        if cap is None or self._free():
            return 0.0
        service = self.service_s()
        if service is None:
            return None
        slots = (len(self.healthy()) or len(self.workers)) * cap
        return (self._waiters.ahead(RANK[priority]) + 1) * service / slots

    async def acquire(
        self,
        exclude: Collection[Worker] = (),
        session: str | None = None,
        priority: Priority = "standard",
        key: str = "anonymous",
    ) -> Worker:
        """Take a slot; give it back with :meth:`release`.

        Args:
            exclude: Workers this request already failed on.
            session: With affinity routing, the session whose worker is preferred.
            priority: The caller's class, and ``key`` its key's name, for the queue's
                order (:mod:`.scheduling`).

        Raises:
            ServiceUnavailableError: no available worker, or the wait timed out.
            RateLimitError: every slot is taken and the queue is full (of requests that
                come first).
        """
        worker = self._preferred(session, exclude) if session is not None else None
        if worker is None:
            worker = self._pick(exclude)
        if worker is not None:
            self._in_flight[worker] += 1
            self._count(1)
            return worker
        if not self.coming() and not any(
            self.available(w) and w not in exclude for w in self.workers
        ):
            raise ServiceUnavailableError(
                f"No healthy worker for model '{self.model}' right now.", retry_after=1
            )
        loop = asyncio.get_running_loop()
        waiter = Ticket(loop.create_future(), exclude, RANK[priority], key)
        if len(self._waiters) >= self.queue_size:
            displaced = self._waiters.make_room(waiter)
            if displaced is None:
                raise self._full(priority)
            if not displaced.future.done():
                displaced.future.set_exception(
                    self._full(PRIORITIES[displaced.rank], displaced=True)
                )
        self._waiters.push(waiter)
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
            self._waiters.remove(waiter)
        if worker is None:
            what = (
                f"for model '{self.model}' to load"
                if self.coming()
                else f"for a worker of model '{self.model}'"
            )
            raise ServiceUnavailableError(
                f"Timed out after {self.queue_timeout_s:g}s waiting {what}.",
                retry_after=self._retry_after(priority),
            )
        return worker

    def fail_waiters(self, error: BaseException) -> int:
        """Answer every request waiting for a slot with ``error``; returns how many."""
        failed = 0
        for waiter in self._waiters.clear():
            if not waiter.future.done():
                waiter.future.set_exception(error)
                failed += 1
        return failed

    def release(self, worker: Worker) -> None:
        """Give a slot back, handing it to the waiter that comes next and may use it."""
        if self._in_flight[worker] <= 0:
            log.error("slot_released_twice", worker=worker.worker_id)
            return
        if self._waiters and self.available(worker):
            found = self._waiters.take(lambda w: None if worker in w.exclude else worker)
            if found is not None:
                self._count(0)
                found[0].future.set_result(worker)
                return
        self._in_flight[worker] -= 1
        self._count(-1)
        if self._waiters:
            self.wake()

    def wake(self) -> None:
        """Hand free slots to waiters, e.g. after a worker became available."""
        while self._waiters and self._free():
            found = self._waiters.take(lambda waiter: self._pick(waiter.exclude))
            if found is None:
                return
            waiter, worker = found
            self._in_flight[worker] += 1
            self._count(1)
            waiter.future.set_result(worker)

    def _expire(self, waiter: Ticket) -> None:
        """The queue timeout: only a waiter still without a slot times out."""
        if waiter.future.done():
            return
        self._waiters.remove(waiter)
        waiter.future.set_result(None)

    def _count(self, change: int) -> None:
        """Slots taken (1), given back (-1) or handed from one request to the next (0):
        the slot-seconds and requests done that :meth:`service_s` reads."""
        now = self._clock()
        self._held_s += self._busy * (now - self._since)
        self._since = now
        self._busy += change
        if change < 1:
            self._done += 1
            if self._done >= _WINDOW:
                self._held_s /= 2
                self._done /= 2

    def _full(self, priority: Priority, *, displaced: bool = False) -> RateLimitError:
        why = "requests that come first took its place" if displaced else "its queue is full"
        return RateLimitError(
            f"Model '{self.model}' is at capacity and {why}; retry shortly.",
            code="model_overloaded",
            retry_after=self._retry_after(priority),
        )

    def _retry_after(self, priority: Priority) -> float:
        """Seconds until a retry would likely find a slot: the expected wait (at least 1)."""
        wait = self.expected_wait_s(priority)
        return 1.0 if wait is None else min(max(wait, 1.0), 3600.0)

    def _free(self) -> bool:
        """Whether an available worker has room."""
        return any(self._has_room(w) and self.available(w) for w in self.workers)

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
