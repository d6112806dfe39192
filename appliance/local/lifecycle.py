"""When a local model's worker processes run: loaded on demand, unloaded when idle.

Each local model has one :class:`ModelLifecycle`, which owns one piece of state: whether
the model is **unloaded**, **loading**, **loaded** or **unloading**. The workers own
whether each child is up, the dispatcher the slots, the health monitor ejection; the
lifecycle decides when the workers run::

    unloaded --demand--> loading --a worker up--> loaded --idle, budget, admin--> unloading
        ^                   |                                                      |
        +-------------------+---------------- workers stopped --------------------+

- A request for a model that is not loaded starts one load (however many requests ask)
  and waits in the model's queue, within ``queue_timeout_s``; the load first makes room
  in the memory budget (:class:`appliance.local.residency.Residency`).
- A load that fails answers the waiting requests with 503 and the reason; the workers
  retry with back-off as after a crash, and until one comes up new requests get the
  same 503 at once (with ``Retry-After`` until the next try).
- Unloading lets the requests in flight finish (up to the model's ``timeout_s``) before
  the workers stop; requests arriving meanwhile wait and load the model again after.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Coroutine
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from appliance.backends.base import Worker
from appliance.errors import ServiceUnavailableError
from appliance.local import memory
from appliance.local.worker import LoadFailure, LocalWorker

if TYPE_CHECKING:
    from appliance.config.backends import LlamaCppModel, OnnxModel

log = structlog.get_logger("appliance.lifecycle")

_POLL_S = 0.05


class State(StrEnum):
    """Where a local model is in its lifecycle."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"


class Slots(Protocol):
    """What a lifecycle asks of its model's slots (the serving ``Dispatcher``)."""

    queue_timeout_s: float

    @property
    def queued(self) -> int: ...

    def waiting(self) -> list[asyncio.Future[Worker | None]]: ...

    def in_flight(self, worker: Worker) -> int: ...

    def fail_waiters(self, error: BaseException) -> int: ...


class Room(Protocol):
    """What a lifecycle asks of the memory budget (:class:`.residency.Residency`)."""

    async def make_room(self, model: ModelLifecycle, *, evict: bool = True) -> bool: ...

    def loaded(self, model: str, seconds: float, *, ok: bool) -> None: ...

    def unloaded(self, model: str, reason: str) -> None: ...


class ModelLifecycle:
    """Loads and unloads the workers of one local model.

    Args:
        config: The model's declaration.
        workers: Its workers (started, not loaded).
        dispatcher: The model's slots: its queue waits for a load, and is failed by one.
        residency: The memory budget shared by every local model.
    """

    def __init__(
        self,
        config: LlamaCppModel | OnnxModel,
        workers: list[LocalWorker],
        dispatcher: Slots,
        residency: Room,
    ) -> None:
        self.config = config
        self.workers = workers
        self.dispatcher = dispatcher
        self.residency = residency
        self.state = State.UNLOADED
        self.error: LoadFailure | None = None
        self.estimate = memory.estimate(config)
        self.peak_mb: float | None = None  # measured in the last run
        self.admitted = False  # holds its share of the memory budget
        self.last_used = time.monotonic()
        self.last_used_at: float | None = None  # wall clock, for people
        self._loaded_once = False
        self._load_started = 0.0
        self._loading: asyncio.Task[None] | None = None
        self._unloading: asyncio.Task[None] | None = None
        for worker in workers:
            worker.watch(self._worker_changed)
            worker.watch_failures(self._worker_failed)

    @property
    def name(self) -> str:
        """The model's public name."""
        return self.config.name

    @property
    def admits(self) -> bool:
        """Whether new requests may take its workers (not while unloading)."""
        return self.state is State.LOADED

    @property
    def coming(self) -> bool:
        """Whether requests should wait for workers that are on their way."""
        return self.state is State.UNLOADING or (self.state is State.LOADING and self.error is None)

    @property
    def loadable(self) -> bool:
        """Whether it is loaded or can be: for ``/readyz``.

        An ``on_demand`` model can be loaded until a load fails; a ``startup`` one only
        once it has loaded (before, it is simply not ready).
        """
        if self.error is not None and not any(w.up for w in self.workers):
            return False
        return self.config.load == "on_demand" or self._loaded_once

    @property
    def idle(self) -> bool:
        """Holding memory, serving nothing and awaited by nobody: free to unload."""
        busy = self.dispatcher.queued or any(self.dispatcher.in_flight(w) for w in self.workers)
        settled = self.state is State.LOADED or (
            self.state is State.LOADING and self.error is not None
        )
        return self.admitted and settled and not busy

    def need_mb(self) -> float:
        """Memory a load needs: the last measured peak, else the estimate."""
        if self.peak_mb is not None:
            return self.peak_mb
        return self.estimate.total_mb if self.estimate is not None else 0.0

    def footprint_mb(self) -> float:
        """What it counts for in the budget now: the peak RSS of its running workers,
        and its estimated share for those that are starting."""
        if not self.admitted:
            return 0.0
        share = self.need_mb() / max(1, len(self.workers))
        total = 0.0
        for worker in self.workers:
            pid = worker.pid() if worker.up else None
            usage = memory.process_usage(pid) if pid is not None else None
            total += usage.peak_mb if usage is not None else share
        return total

    def memory_mb(self) -> float | None:
        """The RSS of its worker processes now (None while none runs)."""
        usages = [memory.process_usage(pid) for w in self.workers if (pid := w.pid())]
        found = [u.rss_mb for u in usages if u is not None]
        return round(sum(found), 1) if found else None

    def touch(self) -> None:
        """A request used the model now."""
        self.last_used = time.monotonic()
        self.last_used_at = time.time()

    def start(self) -> None:
        """At start (or when a reload adds it): load if the config says so."""
        if self.config.load == "startup":
            self._begin_load("startup")
        elif self.config.preload:
            self._begin_load("preload", evict=False)

    def demand(self) -> None:
        """A request wants the model: load it if needed; the request then waits in the queue.

        Raises:
            ServiceUnavailableError: its last load failed and the next try is not due.
        """
        self.touch()
        if self.state is State.UNLOADED:
            self._begin_load("request")
        elif self.state is State.LOADING and self.error is not None:
            raise self._failed_error(self.error)

    async def load(self, timeout_s: float) -> None:
        """Load now (if needed) and wait until a worker is up (the admin endpoint).

        Raises:
            ServiceUnavailableError: the load failed, or took longer than ``timeout_s``.
        """
        self.touch()
        deadline = time.monotonic() + timeout_s
        while self.state is not State.LOADED:
            if self.state is State.UNLOADED:
                self._begin_load("admin")
            elif self.state is State.LOADING and self.error is not None:
                raise self._failed_error(self.error)
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(
                    f"Model '{self.name}' did not load within {timeout_s:g}s.", retry_after=1
                )
            await asyncio.sleep(_POLL_S)

    async def serve_waiting(self) -> int:
        """Let the requests waiting for this model now get their slots (before an unload
        for the memory budget: a model is not swapped out under requests that came
        before the one that wants its memory). Later arrivals do not extend the wait.

        Returns how many requests were waiting.
        """
        waiting = self.dispatcher.waiting()
        if waiting:
            await asyncio.wait(waiting, timeout=self.dispatcher.queue_timeout_s)
        return len(waiting)

    async def unload(self, reason: str) -> None:
        """Stop the workers once their requests finished; callers share one unload."""
        if self.state is State.UNLOADED:
            return
        if self._unloading is None or self._unloading.done():
            self.state = State.UNLOADING
            self._unloading = _detached(self._unload(reason))
        await asyncio.shield(self._unloading)

    async def close(self) -> None:
        """Stop a load or unload in progress (the workers are closed by their group)."""
        for task in (self._loading, self._unloading):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    def describe(self) -> dict[str, Any]:
        """Its state for ``/readyz``, ``/status.json`` and the admin endpoints."""
        return {
            "state": self.state.value,
            "load": self.config.load,
            "idle_unload_s": self.config.idle_unload_s,
            "last_used": self.last_used_at,
            "memory_mb": self.memory_mb(),
            "need_mb": round(self.need_mb(), 1),
            "estimate": self.estimate.describe() if self.estimate is not None else None,
            "last_error": self.error.reason if self.error is not None else None,
        }

    def _begin_load(self, why: str, *, evict: bool = True) -> None:
        self.state = State.LOADING
        self.error = None
        self._loading = _detached(self._load(why, evict))

    async def _load(self, why: str, evict: bool) -> None:
        if not await self.residency.make_room(self, evict=evict):
            self.state = State.UNLOADED
            log.info("model_preload_skipped", model=self.name, need_mb=round(self.need_mb()))
            return
        self.admitted = True
        self._load_started = time.monotonic()  # the load itself, not the wait for room
        log.info("model_loading", model=self.name, why=why, need_mb=round(self.need_mb()))
        for worker in self.workers:
            worker.load()

    async def _unload(self, reason: str) -> None:
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        deadline = time.monotonic() + self.config.timeout_s
        while any(self.dispatcher.in_flight(w) for w in self.workers):
            if time.monotonic() > deadline:
                log.warning("model_unload_forced", model=self.name, reason=reason)
                break
            await asyncio.sleep(_POLL_S)
        peaks = [memory.process_usage(pid) for w in self.workers if (pid := w.pid())]
        if peaks and len(peaks) == len(self.workers) and None not in peaks:
            self.peak_mb = sum(p.peak_mb for p in peaks if p is not None)
        await asyncio.gather(*(w.unload() for w in self.workers))
        self.state, self.error, self.admitted = State.UNLOADED, None, False
        log.info("model_unloaded", model=self.name, reason=reason, peak_mb=self.peak_mb)
        self.residency.unloaded(self.name, reason)
        if self.dispatcher.queued:  # requests came while it unloaded: they want it back
            self._begin_load("queued requests")

    def _worker_changed(self, worker: Worker) -> None:
        if not worker.up:
            return
        self.error = None
        if self.state is State.LOADING:
            self.state = State.LOADED
            self._loaded_once = True
            seconds = time.monotonic() - self._load_started
            log.info("model_loaded", model=self.name, load_s=round(seconds, 2))
            self.residency.loaded(self.name, seconds, ok=True)

    def _worker_failed(self, worker: LocalWorker, failure: LoadFailure) -> None:
        if self.state is State.UNLOADING or any(w.up for w in self.workers):
            return
        self.error = failure
        if self.state is State.LOADING:
            self.residency.loaded(self.name, time.monotonic() - self._load_started, ok=False)
            self.dispatcher.fail_waiters(self._failed_error(failure))

    def _failed_error(self, failure: LoadFailure) -> ServiceUnavailableError:
        wait = max(1.0, failure.retry_at - time.monotonic())
        return ServiceUnavailableError(
            f"Model '{self.name}' failed to load: {failure.reason}. Next try in {wait:.0f}s.",
            code="model_load_failed",
            retry_after=wait,
        )


def _detached(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """A task outside the request that started it: its logs (and the workers it starts,
    which outlive the request) do not carry that request's id."""
    return asyncio.get_running_loop().create_task(coro, context=contextvars.Context())
