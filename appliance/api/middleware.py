"""Falcon middleware: lifespan of the cluster, and authentication."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import falcon.asgi
import structlog

from appliance.api.access import note, on_finish
from appliance.api.metering import Meter
from appliance.api.sse import LiveStreams
from appliance.cluster import ClusterRef
from appliance.errors import ServiceUnavailableError
from appliance.limits import Limiter, Quota
from appliance.reload import Reloader
from appliance.signals import DRAIN_SIGNAL

log = structlog.get_logger("appliance.lifespan")


class Lifespan:
    """Starts the cluster's workers (and the reloader) with the server, stops them with it.

    On :data:`DRAIN_SIGNAL` (the main process is shutting down) open streams get
    ``server.drain_timeout_s`` to finish; those still open then end with an SSE error.
    """

    def __init__(self, ref: ClusterRef, reloader: Reloader | None, live: LiveStreams) -> None:
        self.ref = ref
        self.reloader = reloader
        self.live = live

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self.ref.current.start()
        if self.reloader is not None:
            await self.reloader.start()
        # Only the main thread of a process may handle signals (not so in some tests).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(DRAIN_SIGNAL, self.begin_drain)

    def begin_drain(self) -> None:
        """Start the drain clock."""
        timeout = self.ref.current.config.server.drain_timeout_s
        log.info("draining", open_streams=len(self.live), timeout_s=timeout)
        asyncio.get_running_loop().call_later(timeout, self._end_streams)

    def _end_streams(self) -> None:
        ended = self.live.end_all(
            ServiceUnavailableError(
                "The server is shutting down; retry the request.", retry_after=1
            )
        )
        if ended:
            log.warning("streams_ended_at_shutdown", streams=ended)

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        if self.reloader is not None:
            await self.reloader.stop()
        await self.ref.current.close()


class Authentication:
    """Pins the request to the current cluster, identifies the caller, applies key limits.

    Resources with ``public = True`` (health probes) need no key; those with
    ``metered = True`` (model calls) count against the key's ``rpm`` and ``tpm``.
    """

    def __init__(self, ref: ClusterRef, limiter: Limiter) -> None:
        self.ref = ref
        self.limiter = limiter

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        cluster = req.context.cluster = self.ref.current
        cluster.enter()
        on_finish(req.scope, cluster.leave)
        if resource is None or getattr(resource, "public", False):
            return
        principal = cluster.auth.authenticate(req.get_header("Authorization"))
        req.context.principal = principal
        if cluster.auth.enabled:
            note(req.scope, key=principal.name)
        if principal.limited and getattr(resource, "metered", False):
            req.context.quota = await self.limiter.admit(
                principal.name, principal.rpm, principal.tpm
            )
            if principal.tpm is not None:
                req.context.meter = Meter(self.limiter, principal.name)

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
