"""A caller's W3C trace context (``traceparent``, ``tracestate``), read without a word.

OpenTelemetry's own propagator logs a warning for each header it rejects (too long,
malformed members): a caller could write a log line per request at will. This reads the
two headers itself, into a plain :class:`Parent`, as the W3C Trace Context grammar says,
and silently ignores what does not fit it: a bad ``traceparent`` starts a new trace, a bad
``tracestate`` is left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

MAX_TRACEPARENT = 512  # what the propagator accepts, in characters
MAX_TRACESTATE = 512  # kept at most (the W3C minimum a vendor must pass on)
MAX_MEMBERS = 32
_PARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>-[ -~]*)?"
)
_KEY = r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")


class Parent(NamedTuple):
    """The caller's span: the parent of the request's."""

    trace_id: int
    span_id: int
    sampled: bool  # the caller's sampled flag, which decides for the whole trace
    tracestate: str  # as OTLP carries it: ``key=value`` members joined by commas


def parent(headers: Sequence[tuple[bytes, bytes]]) -> Parent | None:
    """The caller's span as the parent of the request's, or None (a new trace)."""
    traceparent: bytes | None = None
    tracestate: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            if traceparent is not None:
                return None  # two of them: which one is meant is unknown
            traceparent = value
        elif name == b"tracestate":
            tracestate.append(value)
    if traceparent is None or len(traceparent) > MAX_TRACEPARENT:
        return None
    found = _PARENT.fullmatch(traceparent.decode("latin-1").strip(" \t"))
    if found is None:
        return None
    version, trace_id, span_id = found["version"], int(found["trace"], 16), int(found["span"], 16)
    if version == "ff" or (version == "00" and found["rest"]) or not trace_id or not span_id:
        return None
    sampled = bool(int(found["flags"], 16) & 1)
    return Parent(trace_id, span_id, sampled, _state(b",".join(tracestate)))


def _state(header: bytes) -> str:
    """The caller's ``tracestate``; empty when any of it does not fit the grammar."""
    if not header or len(header) > MAX_TRACESTATE:
        return ""
    pairs: dict[str, str] = {}
    for member in header.decode("latin-1").split(","):
        member = member.strip(" \t")
        if not member:
            continue
        found = _MEMBER.fullmatch(member)
        if found is None or found[1] in pairs or len(pairs) == MAX_MEMBERS:
            return ""
        pairs[found[1]] = found[2]
    return ",".join(f"{key}={value}" for key, value in pairs.items())
