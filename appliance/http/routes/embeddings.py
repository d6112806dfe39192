"""``POST /embeddings``."""

from __future__ import annotations

import falcon
import falcon.asgi

from appliance.http.body import read_request
from appliance.serving.cluster import Cluster
from appliance.wire.openai import protocol


class EmbeddingsResource:
    """Embeds a string or a batch, split over the model's workers."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, protocol.EmbeddingRequest)
        principal = req.context.principal
        charge = req.context.open_charge(request.model, body)
        resp.data = await cluster.gateway.embeddings(principal, body, req.context.timing)
        resp.content_type = falcon.MEDIA_JSON
        charge.reply(resp.data)
