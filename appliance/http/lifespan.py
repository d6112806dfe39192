"""The app's lifespan: components started in order with the server, stopped in reverse.

The app factory lists the components; each owns its own start and stop. They start one
after another; a component whose start fails stops nothing of its own, and the ones that
started before it are stopped in reverse order (a :class:`contextlib.AsyncExitStack`), so
a start-up that fails half-way leaves nothing running. Shutdown stops them all in reverse
order, every stop running even if one before it raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from appliance.errors import ServiceUnavailableError
from appliance.http.sse import LiveStreams
from appliance.runtime import heap
from appliance.runtime import processes as runtime
from appliance.runtime.metrics import Metrics, forget_dead_processes
from appliance.runtime.signals import DRAIN_SIGNAL
from appliance.serving.cluster import ClusterRef

log = structlog.get_logger("appliance.lifespan")

_GAUGE_PERIOD_S = 1.0
_FORGET_EVERY = 5  # gauge periods between looks for the gauges of dead processes


class Component(Protocol):
    """A part of the app that runs between the server's start and its stop."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Hooks:
    """A component made of two callables (either may be absent)."""

    def __init__(
        self,
        start: Callable[[], Awaitable[object]] | None = None,
        stop: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self._start, self._stop = start, stop

    async def start(self) -> None:
        if self._start is not None:
            await self._start()

    async def stop(self) -> None:
        if self._stop is not None:
            await self._stop()


class Lifespan:
    """Falcon middleware that runs the components over the ASGI lifespan."""

    def __init__(self, components: Sequence[Component]) -> None:
        self.components = list(components)
        self._stack: contextlib.AsyncExitStack | None = None

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            for component in self.components:
                await component.start()
                stack.push_async_callback(_stopping, component)
            self._stack = stack.pop_all()  # started whole: keep them running

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()


async def _stopping(component: Component) -> None:
    """Stop ``component``; a failure is logged so that the ones before it still stop."""
    try:
        await component.stop()
    except Exception:
        log.exception("component_stop_failed", component=type(component).__name__)


class ClusterLifetime:
    """The serving cluster, whichever one the reference holds when the server stops."""

    def __init__(self, ref: ClusterRef) -> None:
        self.ref = ref

    async def start(self) -> None:
        await self.ref.current.start()

    async def stop(self) -> None:
        await self.ref.current.close()


class StateGauges:
    """Refreshes the state gauges (in flight, queued, worker health) once a second, and
    drops those that dead processes left (a multi-process server replaces a failed one)."""

    def __init__(self, ref: ClusterRef, metrics: Metrics) -> None:
        self.ref = ref
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._labels: set[tuple[str, str]] = set()

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        for tick in itertools.count():
            self.refresh()
            if tick % _FORGET_EVERY == 0:
                gone = forget_dead_processes()
                if gone:
                    log.info("metrics_of_dead_processes_dropped", pids=gone)
            await asyncio.sleep(_GAUGE_PERIOD_S)

    def refresh(self) -> None:
        """Set the state gauges from the current cluster; zero what left it."""
        seen: set[tuple[str, str]] = set()
        for state in self.ref.current.snapshot().models:
            self.metrics.in_flight.labels(state.name).set(state.in_flight)
            self.metrics.queued.labels(state.name).set(state.queued)
            for worker in state.workers:
                seen.add((state.name, worker.worker_id))
                self.metrics.worker_healthy.labels(state.name, worker.worker_id).set(
                    1 if worker.available else 0
                )
        for model, worker_id in self._labels - seen:
            self.metrics.worker_healthy.labels(model, worker_id).set(0)
            self.metrics.in_flight.labels(model).set(0)
            self.metrics.queued.labels(model).set(0)
        self._labels = seen


class Drain:
    """On :data:`DRAIN_SIGNAL` (the server is shutting down) requests get
    ``server.drain_timeout_s`` to finish; streams still open then end with an SSE error,
    and requests not yet answered are answered 503."""

    def __init__(self, ref: ClusterRef, live: LiveStreams) -> None:
        self.ref = ref
        self.live = live

    async def start(self) -> None:
        # Only the main thread of a process may handle signals (not so in some tests).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, self.begin)

    async def stop(self) -> None:
        return None  # the handler stays: a late drain signal must not end the process

    def begin(self) -> None:
        """Start the drain clock."""
        timeout = self.ref.current.config.server.drain_timeout_s
        log.info("draining", open_streams=len(self.live), timeout_s=timeout)
        asyncio.get_running_loop().call_later(timeout, self._end_streams)

    def _end_streams(self) -> None:
        error = ServiceUnavailableError(
            "The server is shutting down; retry the request.", retry_after=1
        )
        ended = self.live.end_all(error)
        if ended:
            log.warning("streams_ended_at_shutdown", streams=ended)
        answered = self.live.answer_all(error)
        if answered:
            log.warning("requests_ended_at_shutdown", requests=answered)


class ProcessRegistration:
    """This process's entry in the runtime folder, so the main process can signal it; made
    once signals can be handled."""

    def __init__(self) -> None:
        self._registration: runtime.Registration | None = None

    async def start(self) -> None:
        self._registration = runtime.register()

    async def stop(self) -> None:
        if self._registration is not None:
            self._registration.close()


class ServingHeap:
    """The garbage collector set for serving once everything started (:mod:`.heap`)."""

    async def start(self) -> None:
        heap.tune()
        heap.freeze()

    async def stop(self) -> None:
        return None
