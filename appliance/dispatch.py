"""Choosing a worker: least busy first, bounded concurrency, a bounded fair queue.

Each model has one :class:`Dispatcher`. A request takes a slot on the healthy worker with
the fewest requests in flight (ties rotate), if that worker is below ``max_concurrency``.
Otherwise it waits in a FIFO queue of at most ``queue_size`` requests for up to
``queue_timeout_s``; a freed slot is handed straight to the longest waiter.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections import deque
from collections.abc import Collection, Sequence

from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.workers import Worker


class Dispatcher:
    """Slots on the workers of one model."""

    def __init__(
        self,
        model: str,
        workers: Sequence[Worker],
        *,
        max_concurrency: int,
        queue_size: int,
        queue_timeout_s: float,
    ) -> None:
        self.model = model
        self.workers = list(workers)
        self.max_concurrency = max_concurrency
        self.queue_size = queue_size
        self.queue_timeout_s = queue_timeout_s
        self._waiters: deque[tuple[asyncio.Future[Worker], Collection[Worker]]] = deque()
        self._turn = itertools.count()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiters)

    def healthy(self) -> list[Worker]:
        """The workers that may take requests."""
        return [w for w in self.workers if w.healthy]

    async def acquire(self, exclude: Collection[Worker] = (), session: str | None = None) -> Worker:
        """Take a slot; release it with :meth:`release`.

        Args:
            exclude: Workers this request already failed on.
            session: With affinity routing, the session whose worker is preferred.

        Raises:
            ServiceUnavailableError: no healthy worker, or the wait timed out.
            RateLimitError: every slot is taken and the queue is full.
        """
        worker = self._preferred(session, exclude) if session is not None else None
        if worker is None:
            worker = self._pick(exclude)
        if worker is not None:
            worker.in_flight += 1
            return worker
        if not any(w.healthy and w not in exclude for w in self.workers):
            raise ServiceUnavailableError(
                f"No healthy worker for model '{self.model}' right now.", retry_after=1
            )
        if len(self._waiters) >= self.queue_size:
            raise RateLimitError(
                f"Model '{self.model}' is at capacity and its queue is full; retry shortly.",
                code="model_overloaded",
                retry_after=1,
            )
        future: asyncio.Future[Worker] = asyncio.get_running_loop().create_future()
        entry = (future, exclude)
        self._waiters.append(entry)
        try:
            return await asyncio.wait_for(future, self.queue_timeout_s)
        except TimeoutError:
            raise ServiceUnavailableError(
                f"Timed out after {self.queue_timeout_s:g}s waiting for a worker of "
                f"model '{self.model}'.",
                retry_after=1,
            ) from None
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            raise
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def release(self, worker: Worker) -> None:
        """Give a slot back, handing it to the longest waiter that may use it."""
        if worker.healthy:
            for entry in self._waiters:
                future, exclude = entry
                if not future.done() and worker not in exclude:
                    self._waiters.remove(entry)
                    future.set_result(worker)
                    return
        worker.in_flight -= 1
        if self._waiters:
            self._wake()

    def wake(self) -> None:
        """Re-check waiters, e.g. after a worker became healthy."""
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            future, exclude = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            worker = self._pick(exclude)
            if worker is None:
                return
            self._waiters.popleft()
            worker.in_flight += 1
            future.set_result(worker)

    def _preferred(self, session: str, exclude: Collection[Worker]) -> Worker | None:
        """The session's worker by rendezvous hashing over healthy workers, if it has room.

        While a worker is down its sessions spread over the rest; when it is back, the
        same hash sends them home again.
        """
        best: Worker | None = None
        best_score = -1
        for worker in self.workers:
            if not worker.healthy or worker in exclude:
                continue
            digest = hashlib.blake2b(
                f"{session}\x00{worker.worker_id}".encode(), digest_size=8
            ).digest()
            score = int.from_bytes(digest, "big")
            if score > best_score:
                best, best_score = worker, score
        if best is not None and best.in_flight < self.max_concurrency:
            return best
        return None

    def _pick(self, exclude: Collection[Worker]) -> Worker | None:
        best: Worker | None = None
        count = len(self.workers)
        start = next(self._turn) % count if count else 0
        for offset in range(count):
            worker = self.workers[(start + offset) % count]
            if not worker.healthy or worker.in_flight >= self.max_concurrency:
                continue
            if worker in exclude:
                continue
            if best is None or worker.in_flight < best.in_flight:
                best = worker
        return best
