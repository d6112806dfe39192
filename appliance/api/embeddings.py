"""``POST /embeddings``."""

from __future__ import annotations

import falcon
import falcon.asgi

from appliance import protocol
from appliance.api.body import read_request
from appliance.api.metering import settle
from appliance.cluster import Cluster


class EmbeddingsResource:
    """Embeds a string or a batch, split over the model's workers."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, _ = await read_request(req, protocol.EmbeddingRequest)
        resp.data = await cluster.gateway.embeddings(
            req.context.principal, body, req.context.timing
        )
        resp.content_type = falcon.MEDIA_JSON
        await settle(req, protocol.read_usage(resp.data))
