"""``GET /healthz`` (the process answers) and ``GET /readyz`` (every model can serve)."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.cluster import Cluster


class HealthResource:
    """Liveness: answers without touching any model."""

    public = True

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = b'{"status":"ok"}'
        resp.content_type = falcon.MEDIA_JSON


class ReadyResource:
    """Readiness: 200 when every model has a healthy worker, else 503; with details."""

    public = True

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        models = {
            name: {
                "ready": group.ready,
                "queued": group.dispatcher.queued,
                "workers": [w.describe() for w in group.workers],
            }
            for name, group in cluster.registry.groups.items()
        }
        ready = cluster.ready
        resp.status = 200 if ready else 503
        resp.data = orjson.dumps({"status": "ready" if ready else "not_ready", "models": models})
        resp.content_type = falcon.MEDIA_JSON
