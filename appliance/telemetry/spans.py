"""A span as the request path records it: a plain object, and the sampling decision.

OpenTelemetry's SDK makes each span a live object (a sampler call, a context, a lock,
attribute values validated one by one, processors told at start and at end): about as
much CPU as the rest of a cheap request. The request path here records a :class:`Record`
instead, whose attributes the code builds itself from values OTLP takes as they are
(``str``, ``bool``, ``int``, ``float``, a list of ``str``), and hands it to the batch
whole when it ends (one ``deque.append``). The exporting thread turns records into what
goes on the wire (:mod:`.otlp`).

Ids and sampling are the SDK's own: ids from :func:`random.getrandbits`, never zero (its
``RandomIdGenerator``), and :class:`Sampler` decides as ``ParentBased(TraceIdRatioBased)``
does (a caller's sampled flag when there is a caller's span; else the trace id's low 64
bits against the SDK's own bound for the ratio). A request not sampled makes no record.
"""

from __future__ import annotations

import random
import time
from typing import Any

INTERNAL, SERVER, CLIENT = 1, 2, 3  # OTLP's span kinds
UNSET, ERROR = 0, 2  # OTLP's status codes
TRACE_ID_LIMIT = (1 << 64) - 1  # the part of a trace id the ratio looks at


class Record:
    """One span: ids as ints (``parent_id`` 0: a root), times in ns since the epoch."""

    __slots__ = (
        "attributes",
        "description",
        "end_ns",
        "kind",
        "name",
        "parent_id",
        "remote_parent",
        "span_id",
        "start_ns",
        "status",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        name: str,
        trace_id: int,
        parent_id: int,
        kind: int,
        attributes: dict[str, Any],
        *,
        start_ns: int | None = None,
        remote_parent: bool = False,
        tracestate: str = "",
    ) -> None:
        self.name = name
        self.trace_id = trace_id
        self.span_id = span_id()
        self.parent_id = parent_id
        self.kind = kind
        self.attributes = attributes
        self.start_ns = time.time_ns() if start_ns is None else start_ns
        self.end_ns = 0
        self.status = UNSET
        self.description: str | None = None  # said with an error status only
        self.remote_parent = remote_parent  # the parent is the caller's span
        self.tracestate = tracestate  # the caller's, carried by every span of its trace

    def fail(self, description: str | None = None) -> None:
        self.status = ERROR
        self.description = description

    def end(self) -> Record:
        self.end_ns = time.time_ns()
        return self


class Sampler:
    """``ParentBased(TraceIdRatioBased(ratio))``'s decision, with the SDK's ``bound``
    for the ratio (``TraceIdRatioBased.get_bound``)."""

    __slots__ = ("bound",)

    def __init__(self, bound: int) -> None:
        self.bound = bound

    def sampled(self, trace_id: int, parent_sampled: bool | None) -> bool:
        """Whether a trace is recorded; ``parent_sampled`` is the caller's flag (None:
        no caller's span, the trace is ours)."""
        if parent_sampled is not None:
            return parent_sampled
        return trace_id & TRACE_ID_LIMIT < self.bound


def trace_id() -> int:
    """A new trace id (128 random bits, not zero)."""
    found = random.getrandbits(128)
    while not found:
        found = random.getrandbits(128)
    return found


def span_id() -> int:
    """A new span id (64 random bits, not zero)."""
    found = random.getrandbits(64)
    while not found:
        found = random.getrandbits(64)
    return found
