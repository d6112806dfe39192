"""``POST /responses``: OpenAI's Responses API, served through the chat-completions path.

The request is translated into a chat request (:mod:`appliance.protocols.responses`) and
run through the same gateway as ``/chat/completions``: keys, model scope, rpm/tpm,
charging, metrics, retries and fallback routes apply unchanged. The chat reply, or its
stream, is translated back. A model (or every target of a route) whose ``openai`` options
say ``responses: passthrough`` gets the request as it came, on the upstream's own
``/responses``, and its answer is relayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.accounting.auth import Principal
from appliance.config import OpenAIModel
from appliance.errors import APIError
from appliance.http.access import note
from appliance.http.body import read_request
from appliance.http.metering import Accountant
from appliance.http.opening import start as opened
from appliance.http.sse import Event, LiveStreams, data
from appliance.http.streaming import Streamer
from appliance.serving.cluster import Cluster
from appliance.wire import usage
from appliance.wire.openai.protocol import Endpoint
from appliance.wire.openai.reply import now
from appliance.wire.responses.protocol import ResponsesRequest, param_name, to_chat
from appliance.wire.responses.reply import from_chat, ident
from appliance.wire.responses.stream import EventStream, frame, response_error
from appliance.wire.usage import StreamTally


class ResponsesResource:
    """Validates a Responses request, then answers it or streams it."""

    metered = True

    def __init__(self, live: LiveStreams, accountant: Accountant) -> None:
        self.accountant = accountant
        self.streamer = Streamer(live, accountant)

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        body, request = await read_request(req, ResponsesRequest)
        note(req.scope, stream=bool(request.stream))
        gateway, principal, timing = cluster.gateway, req.context.principal, req.context.timing
        session = req.get_header("x-session-id") or request.user
        native = passthrough(cluster, principal, request.model)
        endpoint = Endpoint.RESPONSES if native else Endpoint.CHAT
        sent = body if native else to_chat(request, body)
        charge = self.accountant.charge(principal, request.model, sent)
        rid, created = ident("resp"), now()
        if request.stream:
            # Chat streams are always asked for usage; the Responses API has its own.
            with _named_as_sent(native):
                opening = gateway.open_stream(
                    principal, endpoint, sent, timing, session, usage=not native
                )
                stream = await opened(opening, cluster, principal, request.model)
            tally = charge.stream(client_asked=True)
            if native:
                tally = charge.tally = NativeTally(client_asked=True)
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
        used = await charge.reply(reply)
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


class TranslatedFraming:
    """A chat stream's chunks as Responses events (see ``protocols.responses_stream``)."""

    def __init__(self, events: EventStream, tally: StreamTally, chat: dict[str, Any]) -> None:
        self.events = events
        self.tally = tally
        self.chat = chat

    def chunk(self, payload: bytes) -> list[Event]:
        return self._frame(self.events.chunk(usage.parse(payload)))

    def close(self, error: APIError | None) -> list[Event]:
        if error is None:
            return self._frame(self.events.end(self.tally.result(self.chat)))
        return self._frame(self.events.fail(error.code, error.message, param_name(error.param)))

    @staticmethod
    def _frame(events: list[dict[str, Any]]) -> list[Event]:
        return [Event(frame(events))] if events else []


class NativeFraming:
    """An upstream's own Responses events, relayed with their ``event:`` lines."""

    def __init__(self) -> None:
        self._next = 0  # the sequence number an error event of ours would take
        self._failed = False  # the upstream's own failure event went out
        self._response: dict[str, Any] | None = None  # as the last event showed it

    def chunk(self, payload: bytes) -> list[Event]:
        obj = usage.parse(payload)
        kind = obj.get("type") if isinstance(obj, dict) else None
        seq = obj.get("sequence_number") if isinstance(obj, dict) else None
        if isinstance(seq, int):
            self._next = seq + 1
        if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
            self._response = obj["response"]
        if not isinstance(kind, str) or not kind.isprintable():
            return [data(payload)]
        if kind in ("error", "response.failed"):
            self._failed = True
        return [Event(b"event: " + kind.encode() + b"\n" + data(payload).frame)]

    def close(self, error: APIError | None) -> list[Event]:
        if error is None or self._failed:
            return []  # the client has the upstream's own account of the failure
        events: list[dict[str, Any]] = [
            {
                "type": "error",
                "code": error.code,
                "message": error.message,
                "param": error.param,
                "sequence_number": self._next,
            }
        ]
        if self._response is not None:  # ended as a Responses stream ends: response.failed
            failed = {
                **self._response,
                "status": "failed",
                "error": response_error(error.code, error.message),
            }
            events.append(
                {"type": "response.failed", "response": failed, "sequence_number": self._next + 1}
            )
        return [Event(frame(events))]


class NativeTally(StreamTally):
    """Usage of an upstream's Responses stream: from its final response, else estimated."""

    __slots__ = ()

    def chunk(self, payload: bytes) -> bytes | None:
        obj = usage.parse(payload)
        if not isinstance(obj, dict):
            raise usage.not_json()
        delta = obj.get("delta")
        if isinstance(delta, str):
            self.chars += len(delta)
        found = usage.usage_of(obj.get("response"))
        if found is not None:
            self.usage = found
        return payload
