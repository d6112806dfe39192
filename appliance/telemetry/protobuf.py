"""A batch of records as OTLP's protobuf bytes, written directly.

The SDK's own encoder builds a tree of generated protobuf objects for each span (a
``KeyValue`` and an ``AnyValue`` per attribute), after the batch has been turned into the
SDK's ``ReadableSpan`` s: on the exporting thread, several times the CPU the request path
spends on the spans. This writes the same ``ExportTraceServiceRequest`` straight from the
records: one resource and one scope, serialized once by the SDK's encoder at the start
(:func:`frame`), around each span's bytes. What it writes decodes to the message the SDK's
encoder makes for the same spans (a test compares the two), field for field: the ids, the
caller's ``tracestate``, the kind, the times, the attributes (``str``, ``bool``, ``int``,
``float``, lists of them), the status, and the flags that say whether the parent is remote.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

from appliance.telemetry.spans import Record

INT64 = (1 << 64) - 1
HAS_IS_REMOTE, IS_REMOTE = 0x100, 0x200  # SpanFlags: whether the parent is remote is known
_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack
# Attributes with a number or a short string for a value repeat (a method, a route, a
# model's name, a status, a count of tokens): each one's encoding is kept, by its value's
# type, key and value, up to MAX_PAIRS of them (then the lot is forgotten).
SHORT, MAX_PAIRS = 64, 4096
_PAIRS: dict[tuple[type, str, Any], bytes] = {}


def request(
    records: Sequence[Record], resource: bytes, scope: bytes, schemas: tuple[str, str]
) -> bytes:
    """The ``ExportTraceServiceRequest`` of ``records``; ``resource`` and ``scope`` are
    the serialized ``Resource`` and ``InstrumentationScope``, ``schemas`` their schema
    URLs (empty: none)."""
    scope_spans = bytearray(tagged(0x0A, scope))
    for record in records:
        scope_spans += tagged(0x12, span(record))
    if schemas[1]:
        scope_spans += tagged(0x1A, schemas[1].encode())
    resource_spans = tagged(0x0A, resource) + tagged(0x12, bytes(scope_spans))
    if schemas[0]:
        resource_spans += tagged(0x1A, schemas[0].encode())
    return tagged(0x0A, resource_spans)


def span(record: Record) -> bytes:
    """One ``Span`` message."""
    out = bytearray(b"\x0a\x10")
    out += record.trace_id.to_bytes(16, "big")
    out += b"\x12\x08"
    out += record.span_id.to_bytes(8, "big")
    if record.tracestate:
        out += tagged(0x1A, record.tracestate.encode())
    flags = HAS_IS_REMOTE
    if record.parent_id:
        out += b"\x22\x08"
        out += record.parent_id.to_bytes(8, "big")
        if record.remote_parent:
            flags |= IS_REMOTE
    out += tagged(0x2A, record.name.encode())
    out += bytes((0x30, record.kind, 0x39))
    out += _FIXED64(record.start_ns)
    out += b"\x41"
    out += _FIXED64(record.end_ns)
    pairs = _PAIRS
    for key, value in record.attributes.items():
        kind = type(value)
        if kind is int or kind is bool or (kind is str and len(value) <= SHORT):
            found = pairs.get((kind, key, value))
            if found is None:
                found = _attribute(key, value)
                if len(pairs) >= MAX_PAIRS:
                    pairs.clear()
                pairs[kind, key, value] = found
            out += found
        else:
            out += _attribute(key, value)
    if record.status:
        status = bytes((0x18, record.status))
        if record.description:
            status = tagged(0x12, record.description.encode()) + status
        out += tagged(0x7A, status)
    else:
        out += b"\x7a\x00"
    out += b"\x85\x01"
    out += _FIXED32(flags)
    return bytes(out)


def _attribute(key: str, value: Any) -> bytes:
    """An ``attributes`` field (a ``KeyValue``); nothing for a value OTLP does not take."""
    encoded = _value(value)
    if encoded is None:
        return b""
    return tagged(0x4A, tagged(0x0A, key.encode()) + tagged(0x12, encoded))


def _value(value: Any) -> bytes | None:
    """An ``AnyValue``'s bytes; None for what OTLP's attributes do not take."""
    if isinstance(value, str):
        return tagged(0x0A, value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        if not -(1 << 63) <= value < 1 << 63:
            return None
        return b"\x18" + _varint(value & INT64)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, list | tuple):
        items = bytearray()
        for item in value:
            encoded = _value(item)
            if encoded is None:
                return None
            items += tagged(0x0A, encoded)
        return tagged(0x2A, bytes(items))
    return None


def tagged(tag: int, payload: bytes) -> bytes:
    """A length-delimited field: its tag byte, the payload's length, the payload."""
    size = len(payload)
    if size < 0x80:
        return bytes((tag, size)) + payload
    return bytes((tag,)) + _varint(size) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
