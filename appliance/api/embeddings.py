"""``POST /embeddings``."""

from __future__ import annotations

import falcon
import falcon.asgi

from appliance import protocol
from appliance.api.access import note
from appliance.api.body import read_json
from appliance.api.metering import settle
from appliance.cluster import Cluster


class EmbeddingsResource:
    """Embeds a string or a batch, split over the model's workers."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body = await read_json(req, cluster.config.server.max_body_bytes)
        request = protocol.validate(protocol.EmbeddingRequest, body)
        note(req.scope, model=request.model)
        resp.data = await cluster.gateway.embeddings(
            req.context.principal, body, req.context.timing
        )
        resp.content_type = falcon.MEDIA_JSON
        await settle(req, resp.data)
