"""The span that is current for a request's code, and the child spans it makes.

A request's task sees its trace through :data:`.context.CURRENT`: the server span's
:class:`Node` at first, the model call's once it begins, an attempt's while a failover's
attempt runs. Each makes the spans of what happens under it: a wait for a slot
(``queue {model}``, ``load {model}`` for a cold start) and an attempt on a worker
(``attempt {worker}``), as context managers cheaper than generator-based ones; and tells
the upstream its ``traceparent``. A trace not sampled makes none of them.

A failed attempt's span says whether the request failed over after it
(``appliance.failover``), which is known only later: when the same task begins its next
attempt (it did), or when the model call ends (it did not). A span cut by a cancellation
(the client left, the deadline passed, a drain) does not know why: it takes its model
call's outcome (``error.type``) when that ends. Until then such a span is held by its
trace (:meth:`Trace.hold`).
"""

from __future__ import annotations

import time
from asyncio import CancelledError
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from contextvars import ContextVar, Token
from typing import Any, Protocol

from appliance.clip import clip
from appliance.errors import APIError
from appliance.telemetry.context import CURRENT, Active
from appliance.telemetry.spans import INTERNAL, Record

WAIT_SPAN_NS = 1_000_000  # a wait for a slot shorter than this has no span
NOTHING: AbstractContextManager[None] = nullcontext()
# The task's failed attempt whose failover is open: its next attempt says the request
# failed over. Each task's own: the parts of a split request fail over each on its own.
FAILED: ContextVar[Record | None] = ContextVar("appliance_failed_attempt", default=None)


class Trace(Protocol):
    """What a node needs of its request's trace (:class:`.tracer.Trace`)."""

    trace_id: str
    recording: bool
    attempts: int
    provider: str | None  # the backend of the last attempt
    worker: str | None  # the worker of the last attempt
    error: str | None  # the error of the last failed attempt

    def child(
        self,
        name: str,
        parent_id: int,
        kind: int,
        attributes: dict[str, Any],
        started: int | None = None,
    ) -> Record:
        """A new span of the trace under ``parent_id``, begun at ``started`` (or now)."""

    def ended(self, span: Record) -> None:
        """``span`` ends now: it goes to the batch."""

    def hold(self, span: Record) -> None:
        """``span`` ends now; it goes to the batch once what it led to is known (a failed
        attempt: whether the request failed over; a cancelled span: the call's outcome)."""

    def failed_over(self, span: Record) -> None:
        """The request moved on to another attempt after ``span``, a held attempt."""


class Node:
    """A span that is current for a request's code (see :class:`.context.Active`)."""

    __slots__ = ("span_id", "trace")

    def __init__(self, trace: Trace, span_id: int) -> None:
        self.trace = trace
        self.span_id = span_id

    def waiting(self, model: str, loading: Callable[[], bool]) -> AbstractContextManager[Any]:
        if not self.trace.recording:
            return NOTHING
        return _Waiting(self, model, loading())

    def attempt(self, worker_id: str, backend: str) -> AbstractContextManager[Any]:
        if not self.trace.recording:
            return NOTHING
        return _Attempt(self, worker_id, backend)

    def traceparent(self) -> str:
        trace = self.trace
        return f"00-{trace.trace_id}-{self.span_id:016x}-{'01' if trace.recording else '00'}"

    def _record(
        self,
        name: str,
        attributes: dict[str, Any],
        started: int,
        failure: BaseException | None,
    ) -> None:
        """A child span of what happened from ``started`` until now."""
        span = self.trace.child(name, self.span_id, INTERNAL, attributes, started)
        if failure is None:
            self.trace.ended(span)
        else:
            _failed(span, self.trace, failure, attempt=name.startswith("attempt "))


class _Waiting(AbstractContextManager[None]):
    """A wait for a slot: a span if it was a load (``cold``), failed, or took
    :data:`WAIT_SPAN_NS` or more."""

    __slots__ = ("cold", "model", "node", "started")

    def __init__(self, node: Node, model: str, cold: bool) -> None:
        self.node = node
        self.model = model
        self.cold = cold
        self.started = 0

    def __enter__(self) -> None:
        self.started = time.time_ns()

    def __exit__(self, kind: Any, failure: BaseException | None, tb: Any) -> None:
        if self.cold or failure is not None or time.time_ns() - self.started >= WAIT_SPAN_NS:
            what = "load" if self.cold else "queue"
            attributes = {"appliance.model": self.model, "appliance.wait": what}
            self.node._record(f"{what} {self.model}", attributes, self.started, failure)


class _Attempt(AbstractContextManager[None]):
    """An attempt on a worker: the first has a span only if it fails (recorded then);
    each after it has its own, current while it runs (its upstream is told it)."""

    __slots__ = ("attributes", "name", "node", "span", "started", "token")

    def __init__(self, node: Node, worker_id: str, backend: str) -> None:
        self.node = node
        self.name = f"attempt {worker_id}"
        self.attributes: dict[str, Any] = {
            "appliance.worker": worker_id,
            "appliance.backend": backend,
        }
        trace = node.trace
        trace.provider, trace.worker = backend, worker_id
        self.span: Record | None = None
        self.token: Token[Active | None] | None = None
        self.started = 0

    def __enter__(self) -> None:
        node = self.node
        trace = node.trace
        failed = FAILED.get()
        if failed is not None:  # this task's last attempt failed: the request moved on
            FAILED.set(None)
            trace.failed_over(failed)
        trace.attempts += 1
        if trace.attempts == 1:  # the model call's span stands for it, unless it fails
            self.started = time.time_ns()
            return
        self.span = span = trace.child(self.name, node.span_id, INTERNAL, self.attributes)
        self.token = CURRENT.set(Node(trace, span.span_id))

    def __exit__(self, kind: Any, failure: BaseException | None, tb: Any) -> None:
        span = self.span
        if span is None:
            if failure is not None:
                self.node._record(self.name, self.attributes, self.started, failure)
            return
        trace = self.node.trace
        if self.token is not None:
            CURRENT.reset(self.token)
        if failure is None:
            trace.ended(span)
        else:
            _failed(span, trace, failure, attempt=True)


def _failed(span: Record, trace: Trace, exc: BaseException, *, attempt: bool) -> None:
    """End ``span`` with the error it ended with, and why the attempt failed; a span that
    waits to know what it led to is held (see the module docstring)."""
    attributes = span.attributes
    if isinstance(exc, CancelledError):  # why is its model call's to say, when it ends
        span.fail()
        if attempt:
            trace.error = None  # the call ended with its cancellation, not an earlier error
        trace.hold(span)
        return
    kind = type(exc).__name__
    attributes["error.type"] = kind
    span.fail(clip(str(exc)))
    if isinstance(exc, APIError):
        attributes["appliance.error.status"] = exc.status  # what the client gets
        upstream_status = getattr(exc, "upstream_status", None)
        if isinstance(upstream_status, int) and not isinstance(upstream_status, bool):
            attributes["appliance.upstream.status_code"] = upstream_status
        if attempt:
            trace.error = kind
            attributes["appliance.failover.reason"] = clip(exc.message)
            if exc.retryable:  # the gateway may try another worker: known at its next try
                FAILED.set(span)
                trace.hold(span)
                return
            attributes["appliance.failover"] = False
    trace.ended(span)
