"""``GET /models`` and ``GET /models/{id}``: models and aliases the caller may use."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.accounting.auth import Principal
from appliance.serving.cluster import Cluster
from appliance.wire.openai import reply


def _visible(cluster: Cluster, principal: Principal) -> list[str]:
    return [m for m in cluster.registry.public_ids() if principal.allows(m)]


class ModelsResource:
    """The OpenAI model list."""

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        created = cluster.registry.created
        data = [reply.model_card(m, created) for m in _visible(cluster, req.context.principal)]
        resp.data = orjson.dumps({"object": "list", "data": data})
        resp.content_type = falcon.MEDIA_JSON


class ModelResource:
    """One model card."""

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, model_id: str
    ) -> None:
        cluster: Cluster = req.context.cluster
        req.context.principal.check(model_id)
        cluster.registry.resolve(model_id)
        resp.data = orjson.dumps(reply.model_card(model_id, cluster.registry.created))
        resp.content_type = falcon.MEDIA_JSON
