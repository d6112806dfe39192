"""When a local model's worker processes run: the one owner of a local model's state.

Each local model has one :class:`ModelLifecycle`. Its state changes only through
:meth:`ModelLifecycle._move`, called from the lifecycle's own handlers of events: a
request (:meth:`~ModelLifecycle.demand`), the start (:meth:`~ModelLifecycle.start`), an
admin load or unload, an idle timer or the memory budget (:meth:`~ModelLifecycle.unload`),
and its workers' reports (a child up, a child ended). The workers report and never
decide; the memory budget (:class:`appliance.local.residency.Residency`) asks the model
and calls its events; the moves it may make are in :mod:`appliance.local.states`.

A preload gives up when the model does not fit without evicting, unless a request came
meanwhile; a child proves the model runs (a one-token warm-up) before it is up; after
``max_load_attempts`` failed loads in a row the model is ``failed`` until an admin load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from appliance.backends.base import Worker
from appliance.errors import ServiceUnavailableError
from appliance.local import memory
from appliance.local.retries import Retries, detached
from appliance.local.states import MOVES, LoadFailure, Room, Slots, State, load_failed
from appliance.local.worker import ChildEnded, LocalWorker

if TYPE_CHECKING:
    from appliance.config.backends import LlamaCppModel, OnnxModel

log = structlog.get_logger("appliance.lifecycle")

_POLL_S = 0.05


class ModelLifecycle:
    """Loads and unloads the workers of one local model; the only writer of its state.

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
        self._state = State.UNLOADED
        self.error: LoadFailure | None = None
        self.memory = memory.Footprint(config, lambda: [p for w in workers if (p := w.pid())])
        self.admitted = False  # holds its share of the memory budget
        self.last_used = time.monotonic()
        self.last_used_at: float | None = None  # wall clock, for people
        self._retries = Retries()  # failed loads in a row, and the timers to try again
        self._demanded = False  # a request (not only a preload) wants this load
        self._loaded_once = False
        self.load_started = 0.0  # when the load under way (or the last one) began
        self.load_s: float | None = None  # how long the last load took
        self._loading: asyncio.Task[None] | None = None
        self._unloading: asyncio.Task[None] | None = None
        self._stopping: asyncio.Task[None] | None = None
        for worker in workers:
            worker.watch(self._worker_changed)
            worker.watch_ends(self._child_ended)

    @property
    def name(self) -> str:
        """The model's public name."""
        return self.config.name

    @property
    def state(self) -> State:
        """Where the model is; changed only by :meth:`_move`."""
        return self._state

    @property
    def admits(self) -> bool:
        """Whether new requests may take its workers (not while unloading)."""
        return self._state is State.LOADED

    @property
    def coming(self) -> bool:
        """Whether requests should wait for workers that are on their way."""
        return self._state is State.UNLOADING or (
            self._state is State.LOADING and self.error is None
        )

    @property
    def loadable(self) -> bool:
        """Whether it is loaded or can be, for ``/readyz``: an ``on_demand`` model until a
        load fails, a ``startup`` one once it has loaded."""
        if self._state is State.FAILED:
            return False
        if self.error is not None and not any(w.up for w in self.workers):
            return False
        return self.config.load == "on_demand" or self._loaded_once

    @property
    def idle(self) -> bool:
        """Holding memory, serving nothing and awaited by nobody: free to unload."""
        busy = self.dispatcher.queued or any(self.dispatcher.in_flight(w) for w in self.workers)
        settled = self._state is State.LOADED or (
            self._state is State.LOADING and self.error is not None
        )
        return self.admitted and settled and not busy

    @property
    def idle_unload_s(self) -> float | None:
        """Unload after this long unused (the config's)."""
        return self.config.idle_unload_s

    def need_mb(self) -> float:
        """Memory a load needs: the last measured peak, else the estimate."""
        return self.memory.need_mb()

    def footprint_mb(self) -> float:
        """What it counts for in the budget now: the peak RSS of its running workers,
        and its estimated share for those that are starting (nothing unless admitted)."""
        if not self.admitted:
            return 0.0
        serving = [pid for w in self.workers if w.up and (pid := w.pid())]
        return self.memory.held_mb(serving, len(self.workers))

    def touch(self) -> None:
        """A request used the model now."""
        self.last_used = time.monotonic()
        self.last_used_at = time.time()

    # ---- events ------------------------------------------------------------------------

    def start(self) -> None:
        """At start (or when a reload adds it): load if the config says so."""
        if self.config.load == "startup":
            self._begin_load("startup")
        elif self.config.preload:
            self._begin_load("preload", evict=False)

    def demand(self) -> None:
        """A request wants the model: load it if needed; the request then waits in the queue.

        Raises:
            ServiceUnavailableError: its last load failed (and the next try is not due, or
                it is ``failed``).
        """
        self.touch()
        if self._state is State.UNLOADED:
            self._begin_load("request")
        elif self._state is State.LOADING:
            self._demanded = True  # a preload that finds no room loads all the same
            if self.error is not None:
                raise self._failed_error(self.error)
        elif self._state is State.FAILED and self.error is not None:
            raise self._failed_error(self.error)

    async def load(self, timeout_s: float) -> None:
        """Load now (if needed; a ``failed`` model is tried again) and wait until a worker
        is up (the admin endpoint).

        Raises:
            ServiceUnavailableError: the load failed, or took longer than ``timeout_s``.
        """
        self.touch()
        if self._state is State.FAILED:
            self._retries.forget()
            self._begin_load("admin")
        deadline = time.monotonic() + timeout_s
        while self._state is not State.LOADED:
            if self._state is State.UNLOADED:
                self._begin_load("admin")
            elif self._state is State.LOADING:
                self._demanded = True
            if self.error is not None and self._state in (State.LOADING, State.FAILED):
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
        """Stop the workers once their requests finished; callers share one unload. A
        ``failed`` model stays failed."""
        if self._state in (State.UNLOADED, State.FAILED):
            return
        if self._unloading is None or self._unloading.done():
            self._move(State.UNLOADING)
            self._unloading = detached(self._unload(reason))
        await asyncio.shield(self._unloading)

    async def close(self) -> None:
        """Stop loading, unloading and every worker: the model leaves the budget."""
        self._retries.cancel()
        for task in (self._loading, self._unloading, self._stopping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)
        if self._state is not State.UNLOADED:
            self._move(State.UNLOADED)
        self.admitted = False

    def describe(self) -> dict[str, Any]:
        """Its state for ``/readyz``, ``/status.json`` and the admin endpoints."""
        return {
            "state": self._state.value,
            "load": self.config.load,
            "idle_unload_s": self.config.idle_unload_s,
            "last_used": self.last_used_at,
            "memory_mb": self.memory.rss_mb(),
            "need_mb": round(self.need_mb(), 1),
            "estimate": estimate.describe() if (estimate := self.memory.estimate) else None,
            "failed_loads": self._retries.most,
            "last_error": self.error.reason if self.error is not None else None,
        }

    # ---- the one writer of the state ---------------------------------------------------

    def _move(self, to: State) -> None:
        if to not in MOVES[self._state]:
            raise RuntimeError(f"model {self.name!r}: no move from {self._state} to {to}")
        log.debug("model_state", model=self.name, was=self._state.value, now=to.value)
        self._state = to

    # ---- handlers ------------------------------------------------------------------------

    def _begin_load(self, why: str, *, evict: bool = True) -> None:
        self._move(State.LOADING)
        self.error = None
        self._demanded = why != "preload"
        self._loading = detached(self._load(why, evict))

    async def _load(self, why: str, evict: bool) -> None:
        if self._stopping is not None:  # a failed model's workers: stopped before it loads
            await asyncio.shield(self._stopping)
        fits = await self.residency.make_room(self, evict=evict)
        while not fits and (self._demanded or self.dispatcher.queued):
            fits = await self.residency.make_room(self, evict=True)  # requests wait for it
        if not fits:
            self._move(State.UNLOADED)
            log.info("model_preload_skipped", model=self.name, need_mb=round(self.need_mb()))
            return
        self.admitted = True
        self.load_started = time.monotonic()  # the load itself, not the wait for room
        log.info("model_loading", model=self.name, why=why, need_mb=round(self.need_mb()))
        for worker in self.workers:
            worker.load()

    async def _unload(self, reason: str) -> None:
        self._retries.cancel()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            await asyncio.gather(self._loading, return_exceptions=True)
        deadline = time.monotonic() + self.config.timeout_s
        while any(self.dispatcher.in_flight(w) for w in self.workers):
            if time.monotonic() > deadline:
                log.warning("model_unload_forced", model=self.name, reason=reason)
                break
            await asyncio.sleep(_POLL_S)
        self.memory.measure(len(self.workers))
        await asyncio.gather(*(w.unload() for w in self.workers))
        self._move(State.UNLOADED)
        self.error, self.admitted = None, False
        self._retries.forget()
        log.info("model_unloaded", model=self.name, reason=reason, peak_mb=self.memory.peak_mb)
        self.residency.unloaded(self.name, reason)
        if self.dispatcher.queued:  # requests came while it unloaded: they want it back
            self._begin_load("queued requests")

    def _worker_changed(self, worker: Worker) -> None:
        if not worker.up:
            return
        self._retries.came_up(worker)
        if self._state is State.LOADING and self.admitted:
            self.error = None
            self._move(State.LOADED)
            self._loaded_once = True
            seconds = time.monotonic() - self.load_started
            self.load_s = seconds
            log.info("model_loaded", model=self.name, load_s=round(seconds, 2))
            self.residency.loaded(self.name, seconds, ok=True)

    def _child_ended(self, worker: LocalWorker, ended: ChildEnded) -> None:
        if self._state not in (State.LOADING, State.LOADED):
            return  # unloading, or already failed: nothing to try again
        anyone_up = any(w.up for w in self.workers)
        if ended.served:  # it ran and exited: start another soon
            if self._state is State.LOADED and not anyone_up:
                self._move(State.LOADING)  # requests wait for it to come back
                self.load_started = time.monotonic()
            self._retries.schedule(worker, self._retries.delay(0), self._wants_workers)
            return
        failures = self._retries.failed(worker)
        if failures >= self.config.max_load_attempts:
            if not anyone_up:
                self._fail(ended.reason, failures)
            return  # the others serve; this one is not tried again until the next load
        delay = self._retries.delay(failures)
        self._retries.schedule(worker, delay, self._wants_workers)
        if anyone_up or self._state is not State.LOADING:
            return
        self.error = LoadFailure(ended.reason, time.monotonic() + delay)
        self.residency.loaded(self.name, time.monotonic() - self.load_started, ok=False)
        self.dispatcher.fail_waiters(self._failed_error(self.error))

    def _wants_workers(self) -> bool:
        return self._state in (State.LOADING, State.LOADED)

    def _fail(self, reason: str, attempts: int) -> None:
        """Too many failed loads in a row: no more tries until an admin load."""
        self._retries.cancel()
        self._move(State.FAILED)
        self.error, self.admitted = LoadFailure(reason, None), False
        log.error("model_failed", model=self.name, attempts=attempts, reason=reason)
        self.residency.loaded(self.name, time.monotonic() - self.load_started, ok=False)
        self.dispatcher.fail_waiters(self._failed_error(self.error))
        self._stopping = detached(self._stop_workers())

    async def _stop_workers(self) -> None:
        await asyncio.gather(*(w.unload() for w in self.workers))

    def _failed_error(self, failure: LoadFailure) -> ServiceUnavailableError:
        return load_failed(self.name, failure, self._retries.most)
