"""What an upstream says of its own failure, in every layout upstreams write it.

:mod:`appliance.backends.upstream_sse` reads a stream; what it finds that may report an
error (a payload naming ``error``, an ``error:`` line, an event named ``error``) is read
here into an :class:`~appliance.errors.UpstreamStreamError` with the upstream's message,
type and code. :func:`reported` also reads a plain reply that is an error object.
"""

from __future__ import annotations

import math
import time
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from appliance.errors import UpstreamStreamError

MAX_RETRY_AFTER_S = 86_400.0
"""The longest wait relayed from an upstream's ``Retry-After``: a day."""

# The events of a Responses stream that say it failed (relayed first, raised at its end).
RESPONSE_FAILURES = frozenset({"error", "response.failed"})


def error_in(payload: bytes) -> UpstreamStreamError | None:
    """For a payload that may report an error: raise the error it reports (a chat stream's);
    return a Responses stream's failure (relayed first, raised at the end); else None (a
    chunk with ``"error": null``)."""
    obj = parse(payload)
    if not isinstance(obj, dict):
        return None
    if obj.get("type") in RESPONSE_FAILURES:  # the error nested, or its fields at the top
        response = obj.get("response")
        nested = response.get("error") if isinstance(response, dict) else obj.get("error")
        return stream_error(nested if isinstance(nested, dict) and nested else obj)
    found = reported(obj)
    if found is not None:
        raise stream_error(found)
    return None


def raise_error_line(line: bytes) -> None:
    """An error written outside ``data:``: llama.cpp's ``error: {...}`` line (the error's
    own fields), or a JSON error on a line of its own, read as a payload is; other such
    lines are ignored, as SSE says."""
    named = line.startswith(b"error:")
    obj = parse(line[6:] if named else line)
    if not isinstance(obj, dict):
        return
    found = reported(obj)
    if found is None and named and obj:
        found = obj
    if found is not None:
        raise stream_error(found)


def raise_named_error(payload: bytes) -> None:
    """The payload of an event named ``error``: the error it reports, in any layout (its
    fields at the top, ``{"message": ..., "code": 529}``, or plain text). A Responses
    stream's ``error`` event (``"type": "error"``) is read as its other events are."""
    obj = parse(payload)
    if isinstance(obj, dict):
        if obj.get("type") in RESPONSE_FAILURES:
            return
        raise stream_error(reported(obj) or obj)
    text = payload.decode(errors="replace").strip()
    raise UpstreamStreamError(text[:500] or "The upstream's stream failed.")


def reported(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The error's fields if ``obj`` reports one, in any layout upstreams write."""
    error = obj.get("error")
    if isinstance(error, dict) and error:
        return error
    if isinstance(error, str) and error:  # TGI: {"error": "...", "error_type": "..."}
        return {"message": error, "type": obj.get("error_type")}
    if obj.get("object") == "error":  # vLLM's older servers: the error's fields at the top
        return obj
    return None


def stream_error(found: dict[str, Any]) -> UpstreamStreamError:
    message = found.get("message")
    return UpstreamStreamError(
        message if isinstance(message, str) and message else "The upstream's stream failed.",
        upstream_type=text(found.get("type")),
        param=text(found.get("param")),
        code=text(found.get("code")),
    )


def parse(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def text(value: Any) -> str | None:
    """A string field as it is; a number (vLLM's ``"code": 400``) as its digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) and value else None


def retry_after_of(header: str | None) -> float | None:
    """The seconds an upstream's ``Retry-After`` asks a client to wait: a number of seconds
    or an HTTP date (RFC 9110), at least 0 and at most :data:`MAX_RETRY_AFTER_S`; None when
    there is none or it says nothing readable."""
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
