"""The outermost ASGI layer: request id, request-head limits, access log, closing streams.

It wraps the Falcon app rather than being Falcon middleware because only here is the end
of a streamed response visible: the access line then has the real status and duration,
and anything a resource registered for cleanup (an SSE relay whose client left) is
closed explicitly instead of whenever the garbage collector gets to it.

It also answers requests whose head is too large: a request target over
:data:`MAX_TARGET_BYTES` (414) or headers over :data:`MAX_HEADER_BYTES` (431). Granian
would refuse such requests itself only at much larger sizes (a 64 KiB target, about
400 KiB of headers, 100 headers), with an empty body, no log line and no metric; below
those sizes they reach this layer, which answers them as OpenAI envelopes that are logged
and counted like any other request. What Granian refuses never reaches Python.

Whatever the caller wrote (path, model name) is clipped in the log line
(:func:`appliance.clip.clip`), so a caller cannot inflate the logs.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import structlog

from appliance.clip import clip, clip_value
from appliance.errors import APIError, HeadersTooLargeError, URITooLongError
from appliance.http.sse import LiveStreams
from appliance.runtime.logging import BoundOnce
from appliance.runtime.metrics import Metrics, Recent
from appliance.serving.cluster import ClusterRef

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

REQUEST_ID = "appliance.request_id"
LOG_FIELDS = "appliance.log"
CLEANUP = "appliance.cleanup"
STARTED = "appliance.started"
DISCONNECT = "appliance.disconnect"
ROUTE = "appliance.route"  # the matched route's template, set once routing is done

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

MAX_TARGET_BYTES = 8192  # path and query; OpenAI's routes need a few dozen
MAX_HEADER_BYTES = 32768  # names and values together; a large JWT is about 8 KiB

log = BoundOnce("appliance.access")


def note(scope: Scope, **fields: Any) -> None:
    """Add fields to this request's access line."""
    scope.setdefault(LOG_FIELDS, {}).update(fields)


def on_finish(scope: Scope, closer: Callable[[], Awaitable[Any]]) -> None:
    """Run ``closer`` once the response is over, however it ended."""
    scope.setdefault(CLEANUP, []).append(closer)


def on_disconnect(scope: Scope, callback: Callable[[], None]) -> None:
    """Call ``callback`` if the client leaves while the response is being sent."""
    scope.setdefault(DISCONNECT, []).append(callback)


class AccessLayer:
    """Wraps an ASGI app with request ids, access logging, cleanup and disconnects.

    A client that goes away is noticed at once: once the body has been read, one task per
    request waits for ``http.disconnect`` (Falcon's own SSE watcher is fed from it, so
    there is only ever one reader of ``receive``). Before the response has started, the
    request is cancelled, which closes the upstream request and frees the worker slot.
    After it has started (a stream), the callbacks registered with :func:`on_disconnect`
    run, and the relay stops reading from the worker.
    """

    def __init__(
        self, app: ASGIApp, ref: ClusterRef, metrics: Metrics, recent: Recent, live: LiveStreams
    ) -> None:
        self.app = app
        self.ref = ref
        self.metrics = metrics
        self.recent = recent
        self.live = live
        # Unique ids without a system call per request: a random prefix per process.
        self._prefix = f"req_{secrets.token_hex(6)}"
        self._counter = itertools.count()

    def _next_id(self) -> bytes:
        return f"{self._prefix}{next(self._counter):012x}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or self._next_id()
        scope[REQUEST_ID] = request_id.decode()
        exchange = _Exchange(scope, receive, send, request_id)
        started = scope[STARTED] = time.perf_counter()
        tokens = structlog.contextvars.bind_contextvars(request_id=scope[REQUEST_ID])
        self.live.unanswered.add(exchange)
        try:
            refused = _head_too_large(scope)
            if refused is not None:
                await _answer(exchange.send, refused)
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
                await _answer(exchange.send, exchange.ended)
        finally:
            self.live.unanswered.discard(exchange)
            await exchange.finish()
            for closer in scope.get(CLEANUP, ()):
                await closer()
            status = exchange.status or (CLIENT_CLOSED if exchange.gone else 500)
            elapsed = time.perf_counter() - started
            fields = scope.get(LOG_FIELDS, {})
            self._count(scope, status, elapsed, fields.get("model"))
            if self.ref.current.config.logging.access_log:
                log.get().info(
                    "request",
                    method=clip(scope["method"]),
                    path=clip(scope["path"]),
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                    **({"client_gone": True} if exchange.gone else {}),
                    **{name: clip_value(value) for name, value in fields.items()},
                )
            structlog.contextvars.reset_contextvars(**tokens)

    def _count(self, scope: Scope, status: int, elapsed: float, model: Any) -> None:
        # Labels stay bounded: unknown routes and models are not label values.
        route = scope.get(ROUTE) or "unmatched"  # a route's template, never a caller's path
        model = self.ref.current.registry.served_as(model)
        self.metrics.requests.labels(route, model, str(status)).inc()
        self.metrics.latency.labels(route, model).observe(elapsed)
        self.recent.add(time.time(), elapsed, status >= 500)


CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection"


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


async def _answer(send: Send, error: APIError) -> None:
    """Answer with ``error``'s envelope, outside the app (no route was matched)."""
    body = orjson.dumps(error.envelope())
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# A request still running this long after its body arrived starts watching for the
# client to leave; quicker ones (most) never pay for a watcher task.
WATCH_AFTER_S = 0.05


class _Exchange:
    """One request's view of receive/send, watching for the client to leave."""

    __slots__ = (
        "_body_done",
        "_left",
        "_receive",
        "_send",
        "_timer",
        "_watcher",
        "ended",
        "gone",
        "request_id",
        "scope",
        "status",
        "task",
    )

    def __init__(self, scope: Scope, receive: Receive, send: Send, request_id: bytes) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.status = 0
        self.gone = False
        self.ended: APIError | None = None
        self.task = asyncio.current_task()
        self._watcher: asyncio.Future[Message] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._left: int | None = None
        self._body_done = False

    async def receive(self) -> Message:
        if self._body_done:
            # The body is read: whoever asks next (Falcon's SSE watcher) waits for ours.
            return await asyncio.shield(self._watch_now())
        message = await self._receive()
        if message["type"] == "http.request":
            # The body is complete at more_body=False or, since a reader that knows the
            # length stops asking once it has it, at Content-Length bytes.
            if self._left is None:
                self._left = _content_length(self.scope)
            self._left -= len(message.get("body", b""))
            if not message.get("more_body", False) or self._left <= 0:
                self._body_done = True
                self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._watch_now)
        elif message["type"] == "http.disconnect":
            self.gone = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            message["headers"] = [*message.get("headers", ()), (b"x-request-id", self.request_id)]
        await self._send(message)

    def end(self, error: APIError) -> None:
        """Answer ``error`` instead, unless the response has begun (a stream ends itself)."""
        if self.status or self.gone or self.task is None or self.ended is not None:
            return
        self.ended = error
        self.task.cancel()

    def _watch_now(self) -> asyncio.Future[Message]:
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        return self._watcher

    async def _watch(self) -> Message:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self.gone = True
        if not self.status and self.task is not None:
            self.task.cancel()
        for callback in self.scope.get(DISCONNECT, ()):
            callback()
        return message

    async def finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                break
    return 1 << 62  # unknown (chunked): wait for more_body=False


def _incoming_id(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and _VALID_ID.match(value):
            return bytes(value)
    return None
