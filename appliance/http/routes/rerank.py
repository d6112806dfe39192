"""``POST /rerank`` and DB-GPT's ``POST /api/v1/beta/relevance``."""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.errors import UpstreamConnectionError
from appliance.http.body import read_request
from appliance.serving.cluster import Cluster
from appliance.wire import usage as usage_module
from appliance.wire.openai import protocol
from appliance.wire.openai.protocol import Endpoint


class RerankResource:
    """Scores documents against a query; results best first."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, protocol.RerankRequest)
        principal = req.context.principal
        charge = req.context.open_charge(request.model, body)
        resp.data = await cluster.gateway.call(principal, Endpoint.RERANK, body, req.context.timing)
        resp.content_type = falcon.MEDIA_JSON
        charge.reply(resp.data)


class RelevanceResource:
    """DB-GPT's relevance API: one score per document, in the documents' order."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        _, request = await read_request(req, protocol.RerankRequest)
        rerank = {"model": request.model, "query": request.query, "documents": request.documents}
        principal = req.context.principal
        charge = req.context.open_charge(request.model, rerank)
        raw = await cluster.gateway.call(principal, Endpoint.RERANK, rerank, req.context.timing)
        usage = charge.reply(raw)
        reply = usage_module.parse(raw)
        results = reply.get("results") if isinstance(reply, dict) else None
        rid = reply.get("id") if isinstance(reply, dict) else None
        if not isinstance(results, list):
            raise UpstreamConnectionError("The backend sent a rerank reply without results.")
        scores = [0.0] * len(request.documents)
        for result in results:
            index = result.get("index") if isinstance(result, dict) else None
            score = result.get("relevance_score") if isinstance(result, dict) else None
            if (
                isinstance(index, int)
                and 0 <= index < len(scores)
                and isinstance(score, float | int)
            ):
                scores[index] = float(score)
        tokens = usage.total
        resp.data = orjson.dumps(
            {
                "id": rid if isinstance(rid, str) and rid else reply.new_id("rel"),
                "object": "list",
                "model": request.model,
                "data": scores,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
            }
        )
        resp.content_type = falcon.MEDIA_JSON
