"""Falcon middleware: the cluster's lifespan, callers and their limits, overhead."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import falcon.asgi
import structlog

from appliance.accounting.ledger import Ledger
from appliance.accounting.limits import Limiter, Quota
from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.http.access import ROUTE, STARTED, note, on_finish
from appliance.http.sse import LiveStreams
from appliance.runtime import heap
from appliance.runtime import processes as runtime
from appliance.runtime.metrics import Metrics
from appliance.runtime.signals import DRAIN_SIGNAL
from appliance.serving.cluster import ClusterRef
from appliance.serving.gateway import Timing
from appliance.serving.reload import Reloader

log = structlog.get_logger("appliance.lifespan")

_GAUGE_PERIOD_S = 1.0


class Lifespan:
    """Starts the cluster's workers (and the reloader) with the server, stops them with it.

    While running it refreshes the state gauges once a second. On :data:`DRAIN_SIGNAL`
    (the server is shutting down) requests get ``server.drain_timeout_s`` to finish;
    streams still open then end with an SSE error, and requests not yet answered are
    answered 503.

    With ``tune_heap`` (a serving process, not a test's app) the garbage collector is set
    for serving once the app has started (:mod:`appliance.heap`).
    """

    def __init__(
        self,
        ref: ClusterRef,
        reloader: Reloader | None,
        live: LiveStreams,
        metrics: Metrics,
        limiter: Limiter,
        ledger: Ledger | None = None,
        *,
        tune_heap: bool = False,
    ) -> None:
        self.ref = ref
        self.tune_heap = tune_heap
        self.reloader = reloader
        self.live = live
        self.metrics = metrics
        self.limiter = limiter
        self.ledger = ledger
        self._gauges: asyncio.Task[None] | None = None
        self._labels: set[tuple[str, str]] = set()

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.ledger is not None:
            await self.ledger.start()
        await self.ref.current.start()
        if self.reloader is not None:
            await self.reloader.start()
        self._gauges = asyncio.ensure_future(self._refresh_gauges())
        # Only the main thread of a process may handle signals (not so in some tests).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, self.begin_drain)
        # Signals can be handled now: let the main process find this process.
        self._registration = runtime.register()
        if self.tune_heap:
            heap.tune()
            heap.freeze()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        registration: runtime.Registration | None = getattr(self, "_registration", None)
        if registration is not None:
            registration.close()
        if self._gauges is not None:
            self._gauges.cancel()
            await asyncio.gather(self._gauges, return_exceptions=True)
        if self.reloader is not None:
            await self.reloader.stop()
        await self.ref.current.close()
        if self.ledger is not None:
            await self.ledger.close()  # the requests are over: write every buffered row
        await self.limiter.close()

    def begin_drain(self) -> None:
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

    async def _refresh_gauges(self) -> None:
        while True:
            self.refresh_gauges()
            await asyncio.sleep(_GAUGE_PERIOD_S)

    def refresh_gauges(self) -> None:
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


class Authentication:
    """Pins the request to the current cluster, identifies the caller, applies key limits.

    The key comes as ``Authorization: Bearer <key>`` (OpenAI's clients) or, where that
    header is absent, as ``x-api-key: <key>`` (Anthropic's). Resources with
    ``public = True`` (health probes) need no key; those with
    ``metered = True`` (model calls) are admitted against the key's ``rpm``, ``tpm`` and
    ``budget`` (their tokens and cost are charged by the resource, see
    :mod:`appliance.api.metering`; a request admitted before the budget ran out finishes) and get
    a :class:`Timing` for the overhead header.
    """

    def __init__(self, ref: ClusterRef, limiter: Limiter, metrics: Metrics) -> None:
        self.ref = ref
        self.limiter = limiter
        self.metrics = metrics

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        req.scope[ROUTE] = req.uri_template  # bounded metric labels (see access)
        cluster = req.context.cluster = self.ref.current
        cluster.enter()
        on_finish(req.scope, cluster.leave)
        if resource is None or getattr(resource, "public", False):
            return
        authorization = req.get_header("Authorization")
        api_key = req.get_header("x-api-key")
        if authorization is None and api_key:
            authorization = f"Bearer {api_key}"
        principal = cluster.auth.authenticate(authorization)
        req.context.principal = principal
        if cluster.auth.enabled:
            note(req.scope, key_name=principal.name)
        if not getattr(resource, "metered", False):
            return
        req.context.timing = Timing()
        if principal.limited:
            try:
                req.context.quota = await self.limiter.admit(
                    principal.name,
                    principal.rpm,
                    principal.tpm,
                    principal.budget,
                    cluster.config.billing.currency,
                )
            except RateLimitError:
                self.metrics.rate_limited.labels(principal.name).inc()
                raise

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        quota: Quota | None = getattr(req.context, "quota", None)
        if quota is not None:
            resp.set_headers(quota.headers())


class Overhead:
    """``x-appliance-overhead-ms``: time in the appliance, less the client's body, workers
    and queueing."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        timing: Timing | None = getattr(req.context, "timing", None)
        started = req.scope.get(STARTED)
        if timing is None or started is None:
            return
        overhead = time.perf_counter() - started - timing.worker_s - timing.queued_s
        overhead -= timing.client_s
        overhead = max(overhead, 0.0)
        resp.set_header("x-appliance-overhead-ms", f"{overhead * 1000:.3f}")
        self.metrics.overhead.observe(overhead)
