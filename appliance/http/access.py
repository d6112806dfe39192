"""The outermost ASGI layer: where every request's scope begins and ends.

It wraps the Falcon app rather than being Falcon middleware because only here is every
end of a request visible: a streamed response's last byte, a client that left before
the first, a request cancelled by the drain. Each request gets its
:class:`~appliance.http.scope.RequestScope` here (its id, the cluster it is pinned to),
and however it ends, the cleanups a resource registered (an SSE relay) run, each on its
own, and then the scope is finished exactly once, feeding the sinks: the charge and the
ledger, the metrics, the access line (:mod:`.sinks`).

It also answers requests whose head is too large: a request target over
:data:`MAX_TARGET_BYTES` (414) or headers over :data:`MAX_HEADER_BYTES` (431). Granian
would refuse such requests itself only at much larger sizes (a 64 KiB target, about
400 KiB of headers, 100 headers), with an empty body, no log line and no metric; below
those sizes they reach this layer, which answers them in the envelope of the route's API
family, logged and counted like any other request. What Granian refuses never reaches
Python. Granian names HTTP/1.0 ``"1"`` in the scope, which Falcon refuses: it is told
``"1.0"`` (nginx's ``proxy_pass`` speaks HTTP/1.0 by default).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Sequence
from secrets import token_hex
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from appliance.errors import APIError, HeadersTooLargeError, URITooLongError
from appliance.http.errors import envelope_for
from appliance.http.exchange import Exchange, Receive, Scope, Send
from appliance.http.scope import SCOPE, Report, RequestScope, Sink
from appliance.http.sse import LiveStreams
from appliance.runtime.redaction import Secrets
from appliance.serving.cluster import ClusterRef

if TYPE_CHECKING:
    from appliance.telemetry.tracer import Tracing

ASGIApp = Callable[..., Awaitable[None]]

CLEANUP = "appliance.cleanup"

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

MAX_TARGET_BYTES = 8192  # path and query; OpenAI's routes need a few dozen
MAX_HEADER_BYTES = 32768  # names and values together; a large JWT is about 8 KiB

log = structlog.get_logger("appliance.access")


def on_finish(scope: Scope, closer: Callable[[], Awaitable[Any]]) -> None:
    """Run ``closer`` once the response is over, however it ended."""
    scope.setdefault(CLEANUP, []).append(closer)


class AccessLayer:
    """Wraps an ASGI app with request scopes, head limits, cleanups and disconnects.

    Args:
        app: The Falcon app.
        ref: The serving cluster's reference (each request is pinned to the current one).
        live: Requests not yet answered and open streams, for the drain.
        sinks: Where each finished request's account goes, in order, before its last
            bytes are sent (what settles it).
        reports: Where it goes after the response is out (what only reports it).
        tracing: Begins each request's trace when tracing is on (None: off).
        secrets: The configs' secrets (a reload adds to them): a caller's ``x-request-id``
            that holds one is not adopted, as one that is not valid (too long, odd
            characters), so that no header, log, ledger row or request log holds it.
    """

    def __init__(
        self,
        app: ASGIApp,
        ref: ClusterRef,
        live: LiveStreams,
        sinks: Sequence[Sink],
        reports: Sequence[Report] = (),
        tracing: Tracing | None = None,
        secrets: Secrets | None = None,
    ) -> None:
        self.app = app
        self.secrets = secrets if secrets is not None else Secrets()
        self.tracing = tracing
        self.ref = ref
        self.live = live
        self.sinks = list(sinks)
        self.reports = list(reports)
        # Unique ids without a system call per request: a random prefix per process.
        self._prefix = f"req_{token_hex(6)}"
        self._counter = itertools.count()

    def _next_id(self) -> bytes:
        return f"{self._prefix}{next(self._counter):012x}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("http_version") == "1":
            scope["http_version"] = "1.0"
        request_id = _incoming_id(scope, self.secrets) or self._next_id()
        cluster = self.ref.current
        account = scope[SCOPE] = RequestScope(
            request_id.decode(), scope["method"], scope["path"], cluster, self.sinks, self.reports
        )
        if self.tracing is not None:
            trace = account.trace = self.tracing.begin(
                scope["method"], scope["path"], scope["headers"]
            )
            if trace is not None:
                account.note(trace_id=trace.trace_id, span_id=trace.span_id)
        cluster.enter()
        exchange = Exchange(scope, receive, send, request_id, account, self.live)
        tokens = structlog.contextvars.bind_contextvars(request_id=account.request_id)
        self.live.unanswered.add(exchange)
        try:
            refused = _head_too_large(scope)
            if refused is not None:
                await _answer(exchange.send, refused, scope["path"])
            else:
                await self.app(scope, exchange.receive, exchange.send)
        except asyncio.CancelledError:
            # Ours when the client left (nothing to answer) or the drain time ran out
            # before a response began (answer the error); anything else goes on.
            if not exchange.gone and exchange.ended is None:
                raise
            if exchange.task is not None:
                exchange.task.uncancel()
            if exchange.ended is not None and not exchange.gone and not exchange.status:
                await _answer(exchange.send, exchange.ended, scope["path"])
        finally:
            self.live.unanswered.discard(exchange)
            try:
                await _close(scope, exchange)
            finally:
                # Settled, reported and gone from its cluster even if a second
                # cancellation (a shutdown) cut the closing short.
                try:
                    await account.finish(exchange.status, completed=exchange.completed)
                finally:
                    account.report()
                    if account.trace is not None:
                        account.trace.detach()
                    await cluster.leave()
                    structlog.contextvars.reset_contextvars(**tokens)


async def _close(scope: Scope, exchange: Exchange) -> None:
    """Stop watching the client, then run the cleanups a resource registered."""
    await exchange.finish()
    for closer in scope.get(CLEANUP, ()):
        try:
            await closer()
        except Exception:
            log.exception("cleanup_failed", closer=repr(closer))


def _head_too_large(scope: Scope) -> APIError | None:
    """The error for a request target or headers over the limits, if they are."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(
        scope.get("query_string", b"")
    )
    if target > MAX_TARGET_BYTES:
        return URITooLongError(
            f"The request target is {target} bytes long; the limit is {MAX_TARGET_BYTES}."
        )
    size = sum(len(name) + len(value) for name, value in scope.get("headers", ()))
    if size > MAX_HEADER_BYTES:
        return HeadersTooLargeError(
            f"The request headers are {size} bytes long; the limit is {MAX_HEADER_BYTES}."
        )
    return None


async def _answer(send: Send, error: APIError, path: str) -> None:
    """Answer with ``error`` in ``path``'s envelope, outside the app (no route matched)."""
    body = orjson.dumps(envelope_for(error, path))
    headers = [(name.encode(), value.encode()) for name, value in error.headers().items()]
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _incoming_id(scope: Scope, secrets: Secrets) -> bytes | None:
    """The caller's ``x-request-id``, if it is valid and holds no secret."""
    for name, value in scope.get("headers", ()):
        if (
            name == b"x-request-id"
            and _VALID_ID.match(value)
            and not secrets.found_in(value.decode())
        ):
            return bytes(value)
    return None
