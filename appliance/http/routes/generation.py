"""``POST /chat/completions`` and ``POST /completions``, plain and streamed."""

from __future__ import annotations

import falcon
import falcon.asgi

from appliance.http.body import read_request
from appliance.http.opening import start as opened
from appliance.http.sse import LiveStreams
from appliance.http.streaming import Streamer
from appliance.runtime.metrics import Metrics
from appliance.serving.cluster import Cluster
from appliance.wire.openai import protocol
from appliance.wire.openai.protocol import Endpoint


class GenerationResource:
    """Validates a generation request, then answers it or streams it."""

    metered = True

    def __init__(
        self,
        endpoint: Endpoint,
        schema: type[protocol.SamplingRequest],
        live: LiveStreams,
        metrics: Metrics,
    ) -> None:
        self.endpoint = endpoint
        self.schema = schema
        self.streamer = Streamer(live, metrics)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, self.schema)
        req.context.note(stream=bool(request.stream))
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        charge = req.context.open_charge(request.model, body)
        session = req.get_header("x-session-id") or request.user
        if request.stream:
            # Usage is always asked for (to charge it), and hidden again if not wanted.
            opening = gateway.open_stream(
                principal, self.endpoint, body, timing, session, usage=True
            )
            stream = await opened(opening, cluster, principal, request.model)
            options = request.stream_options
            tally = charge.stream(client_asked=bool(options and options.include_usage))
            self.streamer.respond(
                req, resp, stream, model=request.model, tally=tally, settle=charge.settle
            )
            return
        resp.data = await gateway.call(principal, self.endpoint, body, timing, session)
        resp.content_type = falcon.MEDIA_JSON
        charge.reply(resp.data)
