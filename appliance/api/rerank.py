"""``POST /rerank`` and DB-GPT's ``POST /api/v1/beta/relevance``."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance import protocol
from appliance.api.body import read_request
from appliance.api.metering import settle
from appliance.cluster import Cluster
from appliance.workers import Endpoint


class RerankResource:
    """Scores documents against a query; results best first."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, _ = await read_request(req, protocol.RerankRequest)
        resp.data = await cluster.gateway.call(
            req.context.principal, Endpoint.RERANK, body, req.context.timing
        )
        resp.content_type = falcon.MEDIA_JSON
        await settle(req, protocol.read_usage(resp.data))


class RelevanceResource:
    """DB-GPT's relevance API: one score per document, in the documents' order."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        _, request = await read_request(req, protocol.RerankRequest)
        rerank = {"model": request.model, "query": request.query, "documents": request.documents}
        raw = await cluster.gateway.call(
            req.context.principal, Endpoint.RERANK, rerank, req.context.timing
        )
        await settle(req, protocol.read_usage(raw))
        reply = orjson.loads(raw)
        scores = [0.0] * len(request.documents)
        for result in reply["results"]:
            scores[result["index"]] = result["relevance_score"]
        tokens = (reply.get("usage") or {}).get("total_tokens", 0)
        resp.data = orjson.dumps(
            {
                "id": reply.get("id") or protocol.new_id("rel"),
                "object": "list",
                "model": request.model,
                "data": scores,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )
        resp.content_type = falcon.MEDIA_JSON
