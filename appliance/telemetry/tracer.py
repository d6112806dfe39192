"""Tracing on: one request's spans, recorded as plain records, exported by OpenTelemetry.

Imported only when tracing is on (see :func:`start`). A request's spans are
:class:`~.spans.Record` s, sampled as the SDK's ``ParentBased(TraceIdRatioBased)`` would
(a request not sampled records nothing, and its ids still flow); each goes to the bounded
batch (:mod:`.batch`) when it ends, and the exporting thread hands batches to OpenTelemetry's
OTLP/HTTP exporter (:mod:`.otlp`). A request's trace is made of:

- a SERVER span, from the edge to the end of the response (HTTP conventions), continuing
  the caller's W3C ``traceparent`` if it sent one;
- under it, the model call's GenAI span (``chat {model}``, ``embeddings {model}``...);
- under that, one span per wait for a slot (``queue {model}``, or ``load {model}`` when the
  request waited for a local model to load) and one per attempt on a worker
  (``attempt {worker}``), with why it failed and whether the request failed over after
  it. A first attempt has no span while it runs (its upstream's ``traceparent`` names the
  model call's span); its ``attempt`` span is recorded only if it fails. Each attempt after
  it has its own span, which its upstream is told. A span that ends before what it led to
  is known is held until it is (:meth:`Trace.hold`).

A caller's ``traceparent`` is read by :mod:`.propagation`, which never logs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from appliance.clip import clip
from appliance.config.capture import scrubber
from appliance.telemetry import genai, propagation
from appliance.telemetry.batch import BoundedBatch, Seldom
from appliance.telemetry.context import CURRENT
from appliance.telemetry.nodes import Node
from appliance.telemetry.otlp import Wire
from appliance.telemetry.settings import Exporting
from appliance.telemetry.spans import CLIENT, SERVER, Record, Sampler, span_id, trace_id
from appliance.wire.usage import UNPARSED, Usage

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# The exporter's loggers: what they say of a failed export is said once a minute at most.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)


class Tracing:
    """The process's tracer: begins each request's trace; exports off the request path.

    Args:
        exporting: Where spans go (:func:`appliance.telemetry.settings.resolve`).
        dropped: Called with the number of spans dropped (the metric's ``inc``).
    """

    def __init__(self, exporting: Exporting, dropped: Callable[[int], object]) -> None:
        self.capture_content = exporting.capture_content
        self.wire = Wire(
            exporting.endpoint, exporting.headers, exporting.timeout_s, exporting.service_name
        )
        self.batch = BoundedBatch(
            self.wire, dropped, max_queue=exporting.queue_spans, timeout_s=exporting.timeout_s
        )
        # The SDK's ParentBased(TraceIdRatioBased(ratio)), with the SDK's own bound.
        self.sampler = Sampler(TraceIdRatioBased(exporting.sample_ratio).bound)
        for name in EXPORTER_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, Seldom) for f in logger.filters):
                logger.addFilter(Seldom())

    async def start(self) -> None:
        self.batch.start()

    async def close(self) -> None:
        """Send what is queued (bounded by the export timeout) and stop."""
        await asyncio.to_thread(self.batch.shutdown)

    def begin(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> Trace | None:
        """A request's trace, current for the calling task until :meth:`Trace.detach`;
        None for the probes and the scrape (:data:`UNTRACED`), polled all day long."""
        if path in UNTRACED:
            return None
        return Trace(self, method, path, propagation.parent(headers))


class Trace:
    """One request's spans (see the module docstring and :class:`.context.RequestTrace`).

    Not sampled, it records nothing: its ids still flow (the access line, the upstream's
    ``traceparent``, flagged not sampled).
    """

    __slots__ = (
        "_token",
        "_trace",
        "attempts",
        "error",
        "held",
        "method",
        "model",
        "provider",
        "recording",
        "scrub",
        "server",
        "settled",
        "span_id",
        "trace_id",
        "tracestate",
        "tracing",
        "worker",
    )

    def __init__(
        self, tracing: Tracing, method: str, path: str, parent: propagation.Parent | None
    ) -> None:
        self.tracing = tracing
        self.method = method
        if parent is None:
            self._trace = trace_id()
            self.recording = tracing.sampler.sampled(self._trace, None)
            self.tracestate = ""
        else:
            self._trace = parent.trace_id
            self.recording = parent.sampled
            self.tracestate = parent.tracestate
        self.trace_id = f"{self._trace:032x}"
        self.server: Record | None = None
        if self.recording:
            self.server = Record(
                method,
                self._trace,
                0 if parent is None else parent.span_id,
                SERVER,
                {"http.request.method": method, "url.path": clip(path)},
                remote_parent=parent is not None,
                tracestate=self.tracestate,
            )
            server_id = self.server.span_id
        else:
            server_id = span_id()
        self.span_id = f"{server_id:016x}"
        self.model: Record | None = None
        self.provider: str | None = None  # the backend of the last attempt
        self.error: str | None = None  # the error of the last failed attempt
        self.worker: str | None = None  # the worker of the last attempt
        self.attempts = 0
        self.held: list[Record] | None = None  # see hold
        self.settled: str | None = None  # once the call is over: its error.type ("" none)
        self.scrub: Callable[[Any], Any] = _unchanged  # capture.redact, with content only
        self._token = CURRENT.set(Node(self, server_id))

    def child(
        self,
        name: str,
        parent_id: int,
        kind: int,
        attributes: dict[str, Any],
        started: int | None = None,
    ) -> Record:
        """A new span of this trace under ``parent_id``, begun at ``started`` (or now)."""
        return Record(
            name,
            self._trace,
            parent_id,
            kind,
            attributes,
            start_ns=started,
            tracestate=self.tracestate,
        )

    def ended(self, span: Record) -> None:
        self.tracing.batch.add(span.end())

    def hold(self, span: Record) -> None:
        """``span`` ends now and waits for what it led to: a failed attempt for whether
        the request failed over (:meth:`failed_over`, else not), a cancelled span for its
        model call's outcome. Both are known when the model call ends (:meth:`_settle`)."""
        span.end()
        if self.settled is not None:  # a part that ended after its call (split requests)
            self._release(span)
        elif self.held is None:
            self.held = [span]
        else:
            self.held.append(span)

    def failed_over(self, span: Record) -> None:
        held = self.held
        if held is not None and span in held:
            held.remove(span)
            span.attributes["appliance.failover"] = True
            self.tracing.batch.add(span)

    def _settle(self, outcome: str) -> None:
        """The model call is over with ``outcome`` (its ``error.type``, "" if none): the
        held spans are complete."""
        self.settled = outcome
        held, self.held = self.held, None
        for span in held or ():
            self._release(span)

    def _release(self, span: Record) -> None:
        attributes = span.attributes
        if "error.type" in attributes:  # a failed attempt the request did not move on from
            attributes["appliance.failover"] = False
        else:  # cut by a cancellation: what ended its call ended it
            attributes["error.type"] = self.settled or "_OTHER"
        self.tracing.batch.add(span)

    def model_call(
        self, operation: str, model: str, request: dict[str, Any], redact: tuple[str, ...]
    ) -> None:
        if self.model is not None or self.server is None:
            return
        attributes = genai.request_attributes(str(model), request, operation)
        if self.tracing.capture_content:
            self.scrub = scrubber(redact)
            content = genai.input_messages(request, self.scrub)
            if content is not None:
                attributes["gen_ai.input.messages"] = content
        name = f"{operation} {attributes['gen_ai.request.model']}"
        self.model = self.child(name, self.server.span_id, CLIENT, attributes)
        CURRENT.set(Node(self, self.model.span_id))  # reset with the request's (see detach)

    def first_token(self, seconds: float) -> None:
        model = self.model
        if model is not None and not model.end_ns:  # an ended span is the exporter's
            model.attributes["gen_ai.server.time_to_first_token"] = float(seconds)

    def end_model_call(
        self,
        *,
        response_model: str | None,
        usage: Usage | None,
        finish_reasons: list[str],
        error: str | None,
        reply: bytes | None,
        parsed: Any = UNPARSED,
    ) -> None:
        span = self.model
        if span is None:
            return
        failed = None if error is None else self.error or error
        self._settle(failed or "")
        attributes = span.attributes
        attributes.update(genai.response_attributes(response_model, usage, finish_reasons))
        if self.provider is not None:
            attributes["gen_ai.provider.name"] = self.provider
        if self.worker is not None:
            attributes["appliance.worker"] = self.worker
        if self.tracing.capture_content:
            content = genai.output_messages(reply, self.scrub, parsed)
            if content is not None:
                attributes["gen_ai.output.messages"] = content
        if failed is not None:
            attributes["error.type"] = failed
            span.fail()
        self.ended(span)

    def end(self, *, route: str | None, status: int) -> None:
        server = self.server
        if server is None:
            return
        if self.settled is None:  # attempts without a model call: the request's outcome
            self._settle(str(status) if status >= 400 else "")
        attributes = server.attributes
        attributes["http.response.status_code"] = status
        if route is not None:
            attributes["http.route"] = route
            server.name = f"{self.method} {route}"
        if status >= 500:
            attributes["error.type"] = str(status)
            server.fail()
        self.ended(server)

    def detach(self) -> None:
        CURRENT.reset(self._token)


def _unchanged(value: Any) -> Any:
    return value


def start(exporting: Exporting, dropped: Callable[[int], object]) -> Tracing:
    """The process's tracer for ``exporting``."""
    return Tracing(exporting, dropped)
