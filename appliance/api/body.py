"""Reading a JSON request body within the configured size limit."""

from __future__ import annotations

from typing import Any, TypeVar

import falcon.asgi
import orjson

from appliance import protocol
from appliance.api.access import note
from appliance.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError

T = TypeVar("T", bound=protocol.OpenObject)


async def read_json(req: falcon.asgi.Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object.

    Neither Falcon nor Granian limits bodies, so this does: a declared length over the
    limit is refused before reading, and a chunked body is read to at most one byte past it.

    Raises:
        UnsupportedMediaTypeError: the content type is set and is not JSON.
        PayloadTooLargeError: the body is larger than ``max_bytes``.
        InvalidRequestError: the body is not a JSON object (bad UTF-8, syntax, depth).
    """
    content_type = req.content_type
    if content_type and not content_type.split(";", 1)[0].strip().lower().endswith("json"):
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type {content_type!r}; send application/json."
        )
    too_large = PayloadTooLargeError(
        f"The request body is larger than the limit of {max_bytes} bytes."
    )
    length = req.content_length
    if length is not None and length > max_bytes:
        raise too_large
    raw = await req.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise too_large
    if not raw:
        raise InvalidRequestError("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid "
            "UTF-8 JSON (nested at most 1024 levels deep).",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    return body


async def read_request(req: falcon.asgi.Request, schema: type[T]) -> tuple[dict[str, Any], T]:
    """Read, parse and validate a model request; note its model for the access log.

    Returns the JSON object as sent (what travels on) and its validated form.
    """
    body = await read_json(req, req.context.cluster.config.server.max_body_bytes)
    request = protocol.validate(schema, body)
    note(req.scope, model=request.model)
    return body, request
