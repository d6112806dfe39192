"""``POST /responses``: OpenAI's Responses API, served through the chat-completions path.

The request is translated into a chat request (:mod:`appliance.wire.responses.protocol`) and
run through the same gateway as ``/chat/completions``: keys, model scope, rpm/tpm,
charging, metrics, retries and fallback routes apply unchanged. The chat reply, or its
stream, is translated back. A model (or every target of a route) whose ``openai`` options
say ``responses: passthrough`` gets the request as it came, on the upstream's own
``/responses``, and its answer is relayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import falcon
import falcon.asgi
import orjson

from appliance.accounting.auth import Principal
from appliance.config import OpenAIModel
from appliance.errors import APIError
from appliance.http.body import read_request
from appliance.http.opening import start as opened
from appliance.http.sse import LiveStreams
from appliance.http.streaming import Streamer
from appliance.runtime.metrics import Metrics
from appliance.serving.cluster import Cluster
from appliance.wire import usage
from appliance.wire.openai.protocol import Endpoint
from appliance.wire.openai.reply import now
from appliance.wire.responses.framing import NativeFraming, NativeTally, TranslatedFraming
from appliance.wire.responses.protocol import ResponsesRequest, param_name, to_chat
from appliance.wire.responses.reply import from_chat, ident
from appliance.wire.responses.stream import EventStream
from appliance.wire.usage import StreamTally


class ResponsesResource:
    """Validates a Responses request, then answers it or streams it."""

    metered = True

    def __init__(self, live: LiveStreams, metrics: Metrics) -> None:
        self.streamer = Streamer(live, metrics)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, ResponsesRequest)
        req.context.note(stream=bool(request.stream))
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        session = req.get_header("x-session-id") or request.user
        native = passthrough(cluster, principal, request.model)
        endpoint = Endpoint.RESPONSES if native else Endpoint.CHAT
        sent = body if native else to_chat(request, body)
        charge = req.context.open_charge(request.model, sent)
        rid, created = ident("resp"), now()
        if request.stream:
            # Chat streams are always asked for usage; the Responses API has its own.
            with _named_as_sent(native):
                opening = gateway.open_stream(
                    principal, endpoint, sent, timing, session, usage=not native
                )
                stream = await opened(opening, cluster, principal, request.model)
            tally = charge.stream(client_asked=True, kind=NativeTally if native else StreamTally)
            framing: NativeFraming | TranslatedFraming = (
                NativeFraming()
                if native
                else TranslatedFraming(EventStream(request, rid, created), tally, sent)
            )
            self.streamer.respond(
                req,
                resp,
                stream,
                model=request.model,
                tally=tally,
                settle=charge.settle,
                framing=framing,
            )
            return
        with _named_as_sent(native):
            reply = await gateway.call(principal, endpoint, sent, timing, session)
        used = charge.reply(reply)
        if not native:
            reply = orjson.dumps(
                from_chat(request, usage.parse(reply), used, rid=rid, created=created)
            )
        resp.data = reply
        resp.content_type = falcon.MEDIA_JSON


@contextlib.contextmanager
def _named_as_sent(native: bool) -> Iterator[None]:
    """A backend's error about a translated request names the field as the client sent it."""
    try:
        yield
    except APIError as exc:
        if not native:
            exc.param = param_name(exc.param)
        raise


def passthrough(cluster: Cluster, principal: Principal, name: str) -> bool:
    """Whether ``name`` goes to upstreams' own ``/responses``: every target must say so."""
    principal.check(name)
    return all(
        isinstance(group.config, OpenAIModel) and group.config.options.responses == "passthrough"
        for group in cluster.registry.resolve(name)
    )
