"""``POST /chat/completions`` and ``POST /completions``, plain and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

import falcon
import falcon.asgi
from falcon.asgi import SSEvent

from appliance.http.access import STARTED, note, on_disconnect, on_finish
from appliance.http.body import read_request
from appliance.http.metering import Accountant
from appliance.http.opening import start as opened
from appliance.http.sse import LiveStreams, Relay
from appliance.runtime.metrics import StreamStats
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
        accountant: Accountant,
    ) -> None:
        self.endpoint = endpoint
        self.schema = schema
        self.live = live
        self.accountant = accountant

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, self.schema)
        note(req.scope, stream=bool(request.stream))
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        charge = self.accountant.charge(principal, request.model, body)
        session = req.get_header("x-session-id") or request.user
        if request.stream:
            # Usage is always asked for (to charge it), and hidden again if not wanted.
            opening = gateway.open_stream(
                principal, self.endpoint, body, timing, session, usage=True
            )
            stream = await opened(opening, cluster, principal, request.model)
            options = request.stream_options
            relay = Relay(
                stream,
                cluster.config.server.stream_ping_s,
                self.live,
                charge.stream(client_asked=bool(options and options.include_usage)),
                StreamStats(self.accountant.metrics, request.model, req.scope[STARTED]),
                charge.settle,
            )
            on_finish(req.scope, relay.aclose)  # even if the events below never start
            on_disconnect(req.scope, relay.client_gone)
            # Falcon only calls serialize() on what the generator yields.
            resp.sse = cast(AsyncIterator[SSEvent | None], relay.events())
            resp.set_header("cache-control", "no-cache")
            return
        resp.data = await gateway.call(principal, self.endpoint, body, timing, session)
        resp.content_type = falcon.MEDIA_JSON
        await charge.reply(resp.data)
