"""``POST /chat/completions`` and ``POST /completions``, plain and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import falcon
import falcon.asgi
from falcon.asgi import SSEvent

from appliance import protocol
from appliance.api.access import STARTED, note, on_disconnect, on_finish
from appliance.api.body import read_request
from appliance.api.metering import Meter, settle
from appliance.api.sse import LiveStreams, Relay
from appliance.cluster import Cluster
from appliance.metrics import Metrics, StreamStats
from appliance.workers import Endpoint


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
        self.live = live
        self.metrics = metrics

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, self.schema)
        note(req.scope, stream=bool(request.stream))
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        meter: Meter | None = getattr(req.context, "meter", None)
        session = req.get_header("x-session-id") or request.user
        if request.stream:
            if meter is not None:
                body = meter.ask_for_usage(body)
            stream = await gateway.open_stream(principal, self.endpoint, body, timing, session)
            stats = StreamStats(self.metrics, request.model, req.scope[STARTED])
            relay = Relay(stream, cluster.config.server.stream_ping_s, self.live, meter, stats)
            events = relay.events()
            on_finish(req.scope, events.aclose)
            on_disconnect(req.scope, relay.client_gone)
            # Falcon only calls serialize() on what the generator yields.
            resp.sse = cast(AsyncIterator[SSEvent | None], events)
            resp.set_header("cache-control", "no-cache")
            return
        resp.data = await gateway.call(principal, self.endpoint, body, timing, session)
        resp.content_type = falcon.MEDIA_JSON
        usage = protocol.read_usage(resp.data)
        self.metrics.count_usage(request.model, usage)
        await settle(req, usage)
