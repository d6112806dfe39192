"""Answering a request with a relayed stream: the one set-up every streaming route shares."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import falcon.asgi

from appliance.backends.base import ReplyStream
from appliance.errors import APIError
from appliance.http.access import on_finish
from appliance.http.exchange import on_disconnect
from appliance.http.scope import RequestScope
from appliance.http.sse import Event, LiveStreams, Relay
from appliance.runtime.metrics import Metrics, StreamStats
from appliance.wire.sse import Framing
from appliance.wire.usage import StreamTally


class Streamer:
    """Relays a worker's stream to the client as SSE, framed for the route's API family.

    The relay is closed when the request ends, whatever happens (its worker stream closed
    and the request's scope finished: charged, counted, logged), and stops reading as soon
    as the client leaves.
    """

    def __init__(self, live: LiveStreams, metrics: Metrics) -> None:
        self.live = live
        self.metrics = metrics

    def respond(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        stream: ReplyStream,
        *,
        model: str,
        tally: StreamTally,
        settle: Callable[[APIError | None], Awaitable[None]],
        framing: Framing | None = None,
    ) -> None:
        """Make ``resp`` the SSE relay of ``stream``."""
        scope: RequestScope = req.context  # type: ignore[assignment]

        stats = StreamStats(self.metrics, model, scope.started)

        async def closed(failure: APIError | None) -> None:
            await settle(failure)
            if scope.trace is not None and stats.first_s is not None:
                scope.trace.first_token(stats.first_s)
            await scope.finish(200, completed=not scope.client_gone)

        relay = Relay(
            stream,
            scope.cluster.config.server.stream_ping_s,
            self.live,
            tally,
            stats,
            closed,
            framing,
        )
        on_finish(req.scope, relay.aclose)  # even if the events below never start
        on_disconnect(req.scope, relay.client_gone)
        # A plain streamed body, not Falcon's SSE: the exchange already watches for the
        # client leaving (http/exchange.py), so Falcon's own watcher (a task and an ASGI
        # receive per stream) would only repeat it.
        resp.stream = _frames(relay.events())
        resp.content_type = "text/event-stream"
        resp.set_header("cache-control", "no-cache")


async def _frames(events: AsyncIterator[Event | None]) -> AsyncIterator[bytes]:
    """The relay's events as bytes: ``None`` (nothing came for a while) as an SSE ping."""
    async for event in events:
        yield _PING if event is None else event.frame


_PING = b": ping\n\n"
