"""Rendering every error, in one place: OpenAI's envelope, or Anthropic's on its routes.

The envelope follows the route family the client called: Anthropic's Messages routes
(:data:`ANTHROPIC_ROUTES`) answer ``{"type": "error", "error": {"type", "message"}}``
with Anthropic's error types, everything else OpenAI's ``{"error": {...}}``. The status
is the same either way.

Messages may quote what the caller sent (a path, a model name). Where they are written,
the quoted part is clipped (:mod:`appliance.clip`); here, as a last bound, no message is
longer than :data:`MAX_MESSAGE_CHARS`, whoever wrote it.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.asgi
import orjson
import structlog

from appliance.clip import clip
from appliance.errors import APIError
from appliance.wire.anthropic.reply import error_body

log = structlog.get_logger("appliance.api")

MAX_MESSAGE_CHARS = 4096

# Paths (and what lies below them) whose clients are Anthropic's SDKs.
ANTHROPIC_ROUTES = ("/v1/messages", "/api/v1/messages")

_FALCON_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def install(app: falcon.asgi.App[Any, Any]) -> None:
    """Make ``app`` render all errors as OpenAI envelopes."""
    app.add_error_handler(Exception, _unexpected)
    app.add_error_handler(APIError, _api_error)
    app.set_error_serializer(_falcon_error)


def render(resp: falcon.asgi.Response, error: APIError, path: str = "") -> None:
    """Write ``error`` into ``resp``, in the envelope of ``path``'s route family."""
    resp.status = error.status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(envelope_for(error, path))
    for name, value in error.headers().items():
        resp.set_header(name, value)


def envelope_for(error: APIError, path: str) -> dict[str, Any]:
    """``error``'s body in the envelope of ``path``'s route family, its message bounded."""
    message = clip(error.message, MAX_MESSAGE_CHARS)
    if is_anthropic(path):
        return error_body(error.status, message)
    envelope = error.envelope()
    envelope["error"]["message"] = message
    return envelope


def is_anthropic(path: str) -> bool:
    """Whether ``path`` is one of Anthropic's routes, whose errors take its envelope."""
    return any(path == root or path.startswith(f"{root}/") for root in ANTHROPIC_ROUTES)


async def _api_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: APIError, params: Any
) -> None:
    render(resp, error, req.path)


async def _unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: Any
) -> None:
    if isinstance(error, falcon.HTTPError):
        # Falcon's own errors (unknown route, wrong method): let the serializer shape them.
        raise error
    log.exception("unhandled_error", path=clip(req.path))
    render(resp, APIError("The server had an error while processing your request."), req.path)


def _falcon_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: falcon.HTTPError
) -> None:
    status = error.status_code
    if status == 404:
        message = f"Invalid URL ({clip(req.method)} {clip(req.path)})"
    elif status == 405:
        message = f"Method {clip(req.method)} is not allowed on {clip(req.path)}."
    else:
        message = error.description or error.title or "Request failed."
    resp.content_type = falcon.MEDIA_JSON
    if is_anthropic(req.path):
        resp.data = orjson.dumps(error_body(status, message))
        return
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": None,
            "code": _FALCON_CODES.get(status),
        }
    }
    resp.content_type = falcon.MEDIA_JSON
    resp.data = orjson.dumps(body)
