"""The outermost ASGI layer: request id, access log, and closing streams.

It wraps the Falcon app rather than being Falcon middleware because only here is the end
of a streamed response visible: the access line then has the real status and duration,
and anything a resource registered for cleanup (an SSE relay whose client left) is
closed explicitly instead of whenever the garbage collector gets to it.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog

from appliance.cluster import ClusterRef

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]

REQUEST_ID = "appliance.request_id"
LOG_FIELDS = "appliance.log"
CLEANUP = "appliance.cleanup"

_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")

log = structlog.get_logger("appliance.access")


def note(scope: Scope, **fields: Any) -> None:
    """Add fields to this request's access line."""
    scope.setdefault(LOG_FIELDS, {}).update(fields)


def on_finish(scope: Scope, closer: Callable[[], Awaitable[Any]]) -> None:
    """Run ``closer`` once the response is over, however it ended."""
    scope.setdefault(CLEANUP, []).append(closer)


class AccessLayer:
    """Wraps an ASGI app with request ids, access logging and cleanup."""

    def __init__(self, app: ASGIApp, ref: ClusterRef) -> None:
        self.app = app
        self.ref = ref

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or f"req_{secrets.token_hex(12)}".encode()
        scope[REQUEST_ID] = request_id.decode()
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id)]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=scope[REQUEST_ID])
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            for closer in scope.get(CLEANUP, ()):
                await closer()
            if self.ref.current.config.logging.access_log:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    **scope.get(LOG_FIELDS, {}),
                )
            structlog.contextvars.reset_contextvars(**tokens)


def _incoming_id(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id" and _VALID_ID.match(value):
            return bytes(value)
    return None
