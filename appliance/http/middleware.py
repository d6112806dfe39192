"""Falcon middleware: callers and their limits, and the appliance's overhead."""

from __future__ import annotations

import time
from typing import Any

import falcon.asgi
import structlog

from appliance.accounting.limits import Limiter, Quota
from appliance.errors import RateLimitError
from appliance.http.access import ROUTE, STARTED, note, on_finish
from appliance.runtime.metrics import Metrics
from appliance.serving.cluster import ClusterRef
from appliance.serving.gateway import Timing

log = structlog.get_logger("appliance.lifespan")

_GAUGE_PERIOD_S = 1.0


API_PREFIXES = ("/v1", "/api/v1")
"""Where the API is served: OpenAI's prefix, and DB-GPT's for its clients."""


class ApiPrefix:
    """Serves ``/api/v1/...`` (DB-GPT's clients) from the routes of ``/v1/...``.

    The routes are registered once, under ``/v1``; a request under another prefix of
    :data:`API_PREFIXES` is routed as if it came under ``/v1`` (Falcon routes on
    ``req.path`` after ``process_request``). The access log keeps the path as sent.
    """

    _ALIASES = tuple(p + "/" for p in API_PREFIXES[1:])

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        for alias in self._ALIASES:
            if req.path.startswith(alias):
                req.path = API_PREFIXES[0] + req.path[len(alias) - 1 :]
                return


class Authentication:
    """Pins the request to the current cluster, identifies the caller, applies key limits.

    The key comes as ``Authorization: Bearer <key>`` (OpenAI's clients) or, where that
    header is absent, as ``x-api-key: <key>`` (Anthropic's). Resources with
    ``public = True`` (health probes) need no key; those with
    ``metered = True`` (model calls) are admitted against the key's ``rpm``, ``tpm`` and
    ``budget`` (their tokens and cost are charged by the resource, see
    :mod:`appliance.http.metering`; a request admitted before the budget ran out finishes) and get
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
        principal = cluster.auth.caller(
            req.get_header("Authorization"), req.get_header("x-api-key")
        )
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
