"""``GET /healthz`` (the process answers) and ``GET /readyz`` (the replica can serve); both
answer ``HEAD`` too, with the same status and no body."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.http.scope import Access
from appliance.serving.cluster import Cluster


class HealthResource:
    """Liveness: answers without touching any model."""

    access = Access.PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = b'{"status":"ok"}'
        resp.content_type = falcon.MEDIA_JSON

    on_head = on_get  # load balancers that check with HEAD (Falcon sends no body)


class ReadyResource:
    """Readiness: 200 while every required model has an available worker, else 503.

    A local model that is not loaded counts as ready while it can be loaded: an
    ``on_demand`` one until a load of it fails, a ``startup`` one unloaded for being idle.

    Models that are not required (by default ``openai`` and ``scripted`` ones) do not
    decide readiness, so one upstream's outage does not pull the replica from its load
    balancer. With no required model, the replica is ready once started. The body says
    which models are unavailable; with the admin key it also reports every model
    (available or not, required or not) and each worker's state.
    """

    access = Access.PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        snapshot = cluster.snapshot()
        ready = snapshot.ready
        resp.status = 200 if ready else 503
        body: dict[str, object] = {
            "status": "ready" if ready else "not_ready",
            "unavailable": [m.name for m in snapshot.models if not m.ready],
        }
        if req.context.admin:  # worker PIDs, memory, load errors: for the operator only
            body["models"] = {m.name: m.as_dict() for m in snapshot.models}
        resp.data = orjson.dumps(body)
        resp.content_type = falcon.MEDIA_JSON

    on_head = on_get
