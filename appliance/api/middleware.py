"""Falcon middleware: lifespan of the cluster, and authentication."""

from __future__ import annotations

from typing import Any

import falcon.asgi

from appliance.api.access import note
from appliance.cluster import ClusterRef


class Lifespan:
    """Starts the cluster's workers with the server and stops them with it."""

    def __init__(self, ref: ClusterRef) -> None:
        self.ref = ref

    async def process_startup(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self.ref.current.start()

    async def process_shutdown(self, scope: dict[str, Any], event: dict[str, Any]) -> None:
        await self.ref.current.close()


class Authentication:
    """Pins the request to the current cluster and identifies the caller.

    Resources with ``public = True`` (health probes) need no key.
    """

    def __init__(self, ref: ClusterRef) -> None:
        self.ref = ref

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        cluster = req.context.cluster = self.ref.current
        if resource is None or getattr(resource, "public", False):
            return
        principal = cluster.auth.authenticate(req.get_header("Authorization"))
        req.context.principal = principal
        if cluster.auth.enabled:
            note(req.scope, key=principal.name)
