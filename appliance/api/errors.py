"""Rendering every error as the OpenAI envelope, in one place.

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

log = structlog.get_logger("appliance.api")

MAX_MESSAGE_CHARS = 4096

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


def render(resp: falcon.asgi.Response, error: APIError) -> None:
    """Write ``error`` into ``resp``."""
    resp.status = error.status
    resp.content_type = falcon.MEDIA_JSON
    envelope = error.envelope()
    envelope["error"]["message"] = clip(envelope["error"]["message"], MAX_MESSAGE_CHARS)
    resp.data = orjson.dumps(envelope)
    for name, value in error.headers().items():
        resp.set_header(name, value)


async def _api_error(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: APIError, params: Any
) -> None:
    render(resp, error)


async def _unexpected(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, error: Exception, params: Any
) -> None:
    if isinstance(error, falcon.HTTPError):
        # Falcon's own errors (unknown route, wrong method): let the serializer shape them.
        raise error
    log.exception("unhandled_error", path=clip(req.path))
    render(resp, APIError("The server had an error while processing your request."))


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
