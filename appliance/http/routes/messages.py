"""``POST /messages``: Anthropic's Messages API, served through the chat-completions path.

The request is translated into a chat request (:mod:`appliance.wire.anthropic.protocol`) and
runs through the same gateway as ``/chat/completions``: keys and their model scope, rpm
and tpm, charging, metrics, the access log, retries and fallback routes apply unchanged.
The reply, or each chunk of the stream, is translated back
(:mod:`appliance.wire.anthropic.reply`). Errors get Anthropic's envelope where all
errors are rendered (:mod:`appliance.http.errors`), by route.

``POST /messages/count_tokens`` asks the model itself: the same translated request with
``max_tokens: 1``, whose reply states how many tokens the backend's own tokenizer and
chat template made of the prompt. It is a model call, admitted and charged like one. A
backend that reports no usage cannot be counted for: a 400 says so, rather than a guess.
"""

from __future__ import annotations

import falcon
import falcon.asgi
import orjson

from appliance.errors import InvalidRequestError
from appliance.http.body import read_json
from appliance.http.opening import start as opened
from appliance.http.sse import LiveStreams
from appliance.http.streaming import Streamer
from appliance.runtime.metrics import Metrics
from appliance.serving.cluster import Cluster
from appliance.wire import usage
from appliance.wire.anthropic import protocol as anthropic
from appliance.wire.anthropic import reply as anthropic_reply
from appliance.wire.anthropic import to_chat
from appliance.wire.anthropic.framing import AnthropicFraming
from appliance.wire.openai.protocol import Endpoint


class MessagesResource:
    """Validates a Messages request, runs it as a chat request, answers in Anthropic's shape."""

    metered = True

    def __init__(self, live: LiveStreams, metrics: Metrics) -> None:
        self.streamer = Streamer(live, metrics)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body = await read_json(req)
        request = anthropic.parse(anthropic.MessagesRequest, body)
        req.context.note(model=request.model, stream=bool(request.stream))
        chat = to_chat.to_chat(request)
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        charge = req.context.open_charge(request.model, chat)
        metadata = request.metadata
        session = req.get_header("x-session-id") or (metadata.user_id if metadata else None)
        if request.stream:
            opening = gateway.open_stream(
                principal, Endpoint.CHAT, chat, timing, session, usage=True
            )
            stream = await opened(opening, cluster, principal, request.model)
            tally = charge.stream(client_asked=True)  # the translator reads the usage chunk
            translator = anthropic_reply.StreamTranslator(request.model, request.stop_sequences)
            self.streamer.respond(
                req,
                resp,
                stream,
                model=request.model,
                tally=tally,
                settle=charge.settle,
                framing=AnthropicFraming(translator, tally, chat),
            )
            return
        reply = await gateway.call(principal, Endpoint.CHAT, chat, timing, session)
        use = charge.reply(reply)
        answer = anthropic_reply.message(
            usage.parse(reply), use, request.model, request.stop_sequences
        )
        resp.data = orjson.dumps(answer)
        resp.content_type = falcon.MEDIA_JSON


class CountTokensResource:
    """The input tokens of a Messages request, as the model's backend counts them."""

    metered = True

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body = await read_json(req)
        request = anthropic.parse(anthropic.CountTokensRequest, body)
        req.context.note(model=request.model)
        chat = {**to_chat.to_chat(request), "max_tokens": 1}
        principal = req.context.principal
        charge = req.context.open_charge(request.model, chat)
        session = req.get_header("x-session-id")
        reply = await cluster.gateway.call(
            principal, Endpoint.CHAT, chat, req.context.timing, session
        )
        use = charge.reply(reply)
        if use.estimated:
            raise InvalidRequestError(
                f"The backend of model `{request.model}` reports no token usage, so its "
                "tokens cannot be counted.",
                param="model",
                code="unsupported_value",
            )
        resp.data = orjson.dumps({"input_tokens": use.prompt})
        resp.content_type = falcon.MEDIA_JSON
