"""Reading a request body: within the size, time and nesting limits, then validated.

Every route that takes a body reads it here, so the limits hold for all of them at once:

- size: ``server.max_body_bytes`` (413), for chunked bodies too;
- time: ``server.body_timeout_s`` from the first read to the last byte (408), so a client
  that declares a body and stalls does not hold its connection;
- nesting: :data:`MAX_DEPTH` levels of arrays and objects (400). orjson parses up to 1024
  levels but writes at most 254, so a deeper body that passed the parser would fail when
  relayed to an upstream. No tool or JSON schema comes near the limit.
"""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

import falcon.asgi
import orjson

from appliance.clip import clip
from appliance.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from appliance.runtime.deadline import Deadline
from appliance.serving.timing import Timing
from appliance.wire.openai import protocol

T = TypeVar("T", bound=protocol.OpenObject)

MAX_DEPTH = 128

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_ONE_BRACKET = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_SCALARS = (str, int, float, bool)


async def read_json(req: falcon.asgi.Request) -> dict[str, Any]:
    """The body as a JSON object.

    Neither Falcon nor Granian limits bodies, so this does: a declared length over
    ``server.max_body_bytes`` is refused before reading, and a chunked body is read to at
    most one byte past it; the whole body must arrive within ``server.body_timeout_s``.

    Raises:
        UnsupportedMediaTypeError: the content type is set and is not JSON.
        PayloadTooLargeError: the body is larger than ``max_bytes``.
        RequestTimeoutError: the body did not arrive within ``timeout_s``.
        InvalidRequestError: the body is not a JSON object (bad UTF-8, syntax, depth).
    """
    content_type = req.content_type
    if content_type and not content_type.split(";", 1)[0].strip().lower().endswith("json"):
        raise UnsupportedMediaTypeError(
            f"Unsupported Content-Type {clip(content_type)!r}; send application/json."
        )
    cluster = req.context.cluster
    max_bytes = cluster.config.server.max_body_bytes
    timeout_s = cluster.config.server.body_timeout_s
    length = req.content_length
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    started = time.perf_counter()
    try:
        with Deadline(timeout_s, cluster.timers):
            raw = await req.stream.read(max_bytes + 1)
    except TimeoutError:
        raise RequestTimeoutError(
            f"The request body did not arrive within {timeout_s:g}s; "
            "send the whole body promptly, or retry."
        ) from None
    finally:
        # Waiting for a slow client's body is not the appliance's overhead.
        timing: Timing | None = getattr(req.context, "timing", None)
        if timing is not None:
            timing.client_s += time.perf_counter() - started
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    if not raw:
        raise InvalidRequestError(
            "The request body is empty; send a JSON object.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequestError(
            "We could not parse the JSON body of your request. The body must be valid "
            f"UTF-8 JSON, with arrays and objects nested at most {MAX_DEPTH} levels deep.",
            code="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.", code="invalid_json")
    if too_deep(raw, MAX_DEPTH):
        raise InvalidRequestError(
            f"The JSON body of your request is nested more than {MAX_DEPTH} levels deep; "
            f"arrays and objects may be nested at most {MAX_DEPTH} levels.",
            code="invalid_json",
        )
    return body


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"The request body is larger than the limit of {max_bytes} bytes.")


def too_deep(raw: bytes, limit: int) -> bool:
    """Whether the valid JSON ``raw`` nests arrays and objects more than ``limit`` deep.

    Ordinary bodies have fewer brackets than the limit and cost two counts. Otherwise the
    strings are cut out and every other byte but the brackets dropped, leaving the bare
    shape, e.g. ``[[][[]]]``; each pass of removing ``[]`` takes one level off every
    branch. All of it runs in C, at most ``limit`` passes over a shrinking copy. Without
    an escaped quote in the body every quote delimits a string, and splitting at quotes
    cuts the strings out faster than a regular expression.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    plain = b'\\"' not in raw
    outside = b"".join(raw.split(b'"')[::2]) if plain else _STRING.sub(b"", raw)
    shape = outside.translate(_ONE_BRACKET, _NOT_BRACKETS)
    for _ in range(limit):
        if not shape:
            return False
        shape = shape.replace(b"[]", b"")
    return bool(shape)


async def read_request(req: falcon.asgi.Request, schema: type[T]) -> tuple[dict[str, Any], T]:
    """Read, parse and validate a model request; note its model for the access log.

    Returns the JSON object that travels on, and its validated form. The object is the
    one sent, with each top-level scalar field the client set replaced by its validated
    value (``"dimensions": 8.0`` travels as ``8``); nested objects, such as the messages,
    and fields unknown to the schema travel as sent.
    """
    body = await read_json(req)
    request = protocol.validate(schema, body)
    declared = type(request).model_fields
    for name in request.model_fields_set:
        if name in declared:
            value = getattr(request, name)
            if value is None or isinstance(value, _SCALARS):
                body[name] = value
    req.context.note(model=request.model)
    return body, request
