"""Tracing on: OpenTelemetry's SDK, its OTLP/HTTP exporter, and one request's spans.

Imported only when tracing is on (see :func:`start`). A request's trace is made of:

- a SERVER span, from the edge to the end of the response (HTTP conventions), continuing
  the caller's W3C ``traceparent`` if it sent one;
- under it, the model call's GenAI span (``chat {model}``, ``embeddings {model}``...);
- under that, one span per wait for a slot (``queue {model}``, or ``load {model}`` when the
  request waited for a local model to load) and one per attempt on a worker
  (``attempt {worker}``), with why it failed over. A first attempt has no span while it
  runs (its upstream's ``traceparent`` names the model call's span); its ``attempt`` span
  is recorded only if it fails. Each attempt after it has its own span, which its upstream
  is told.

A caller's ``traceparent`` is read by :mod:`.propagation`, which never logs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from appliance.clip import clip
from appliance.config.capture import scrubber
from appliance.errors import APIError
from appliance.telemetry import genai, propagation
from appliance.telemetry.batch import BoundedBatch, Seldom
from appliance.telemetry.context import CURRENT
from appliance.telemetry.settings import Exporting
from appliance.wire.usage import Usage

UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
# The exporter's loggers: what they say of a failed export is said once a minute at most.
EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
)
WAIT_SPAN_NS = 1_000_000  # a wait for a slot shorter than this has no span


class Tracing:
    """The process's tracer: begins each request's trace; exports off the request path.

    Args:
        exporting: Where spans go (:func:`appliance.telemetry.settings.resolve`).
        dropped: Called with the number of spans dropped (the metric's ``inc``).
    """

    def __init__(self, exporting: Exporting, dropped: Callable[[int], object]) -> None:
        self.capture_content = exporting.capture_content
        exporter = OTLPSpanExporter(
            endpoint=exporting.endpoint, headers=exporting.headers, timeout=exporting.timeout_s
        )
        self.batch = BoundedBatch(
            exporter, dropped, max_queue=exporting.queue_spans, timeout_s=exporting.timeout_s
        )
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": exporting.service_name}),
            sampler=ParentBased(TraceIdRatioBased(exporting.sample_ratio)),
        )
        self.provider.add_span_processor(self.batch)
        self.tracer: Tracer = self.provider.get_tracer("appliance")
        for name in EXPORTER_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, Seldom) for f in logger.filters):
                logger.addFilter(Seldom())

    async def start(self) -> None:
        self.batch.start()

    async def close(self) -> None:
        """Send what is queued (bounded by the export timeout) and stop."""
        await asyncio.to_thread(self.provider.shutdown)

    def begin(self, method: str, path: str, headers: Sequence[tuple[bytes, bytes]]) -> Trace | None:
        """A request's trace, current for the calling task until :meth:`Trace.detach`;
        None for the probes and the scrape (:data:`UNTRACED`), polled all day long."""
        if path in UNTRACED:
            return None
        return Trace(self, method, path, propagation.parent(headers))


class Node:
    """A span that is current for a request's code (see :class:`.context.Active`)."""

    __slots__ = ("span", "trace")

    def __init__(self, trace: Trace, span: Span) -> None:
        self.trace = trace
        self.span = span

    @contextmanager
    def waiting(self, model: str, loading: Callable[[], bool]) -> Iterator[None]:
        if not self.trace.recording:
            yield
            return
        cold = loading()
        started = time.time_ns()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if cold or failure is not None or time.time_ns() - started >= WAIT_SPAN_NS:
                what = "load" if cold else "queue"
                attributes = {"appliance.model": model, "appliance.wait": what}
                self._record(f"{what} {model}", attributes, started, failure)

    @contextmanager
    def attempt(self, worker_id: str, backend: str) -> Iterator[None]:
        trace = self.trace
        if not trace.recording:
            yield
            return
        trace.provider, trace.worker = backend, worker_id
        attributes = {"appliance.worker": worker_id, "appliance.backend": backend}
        name = f"attempt {worker_id}"
        trace.attempts += 1
        if trace.attempts == 1:  # the model call's span stands for it, unless it fails
            started = time.time_ns()
            try:
                yield
            except BaseException as exc:
                self._record(name, attributes, started, exc)
                raise
            return
        span = trace.tracing.tracer.start_span(
            name, set_span_in_context(self.span), SpanKind.INTERNAL, attributes
        )
        token = CURRENT.set(Node(trace, span))
        try:
            yield
        except BaseException as exc:
            _failed(span, trace, exc, attempt=True)
            raise
        finally:
            CURRENT.reset(token)
            span.end()

    def traceparent(self) -> str:
        ctx = self.span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def _record(
        self,
        name: str,
        attributes: dict[str, Any],
        started: int,
        failure: BaseException | None,
    ) -> None:
        """A child span of what happened from ``started`` until now."""
        span = self.trace.tracing.tracer.start_span(
            name, set_span_in_context(self.span), SpanKind.INTERNAL, attributes, start_time=started
        )
        if failure is not None:
            _failed(span, self.trace, failure, attempt=name.startswith("attempt "))
        span.end()


def _failed(span: Span, trace: Trace, exc: BaseException, *, attempt: bool) -> None:
    """Record on ``span`` the error it ended with, and why the request failed over."""
    kind = type(exc).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, clip(str(exc))))
    if isinstance(exc, APIError):
        span.set_attribute("appliance.error.status", exc.status)  # what the client gets
        upstream_status = getattr(exc, "upstream_status", None)
        if isinstance(upstream_status, int):
            span.set_attribute("appliance.upstream.status_code", upstream_status)
        if attempt:
            trace.error = kind
            span.set_attribute("appliance.failover", exc.retryable)
            span.set_attribute("appliance.failover.reason", clip(exc.message))


class Trace:
    """One request's spans (see the module docstring and :class:`.context.RequestTrace`)."""

    __slots__ = (
        "_token",
        "attempts",
        "error",
        "method",
        "model",
        "node",
        "provider",
        "recording",
        "scrub",
        "server",
        "span_id",
        "trace_id",
        "tracing",
        "worker",
    )

    def __init__(self, tracing: Tracing, method: str, path: str, parent: Any) -> None:
        self.tracing = tracing
        self.method = method
        self.server = tracing.tracer.start_span(
            method,
            parent,
            SpanKind.SERVER,
            {"http.request.method": method, "url.path": clip(path)},
        )
        # Not sampled: ids still flow (logs, the upstream), but no other span is made.
        self.recording = self.server.is_recording()
        ctx = self.server.get_span_context()
        self.trace_id = f"{ctx.trace_id:032x}"
        self.span_id = f"{ctx.span_id:016x}"
        self.node = Node(self, self.server)
        self.model: Span | None = None
        self.provider: str | None = None  # the backend of the last attempt
        self.error: str | None = None  # the error of the last failed attempt
        self.worker: str | None = None  # the worker of the last attempt
        self.attempts = 0
        self.scrub: Callable[[Any], Any] = _unchanged  # capture.redact, with content only
        self._token = CURRENT.set(self.node)

    def model_call(
        self, operation: str, model: str, request: dict[str, Any], redact: tuple[str, ...]
    ) -> None:
        if self.model is not None or not self.recording:
            return
        attributes = genai.request_attributes(str(model), request, operation)
        if self.tracing.capture_content:
            self.scrub = scrubber(redact)
            content = genai.input_messages(request, self.scrub)
            if content is not None:
                attributes["gen_ai.input.messages"] = content
        self.model = self.tracing.tracer.start_span(
            f"{operation} {attributes['gen_ai.request.model']}",
            set_span_in_context(self.server),
            SpanKind.CLIENT,
            attributes,
        )
        CURRENT.set(Node(self, self.model))  # reset with the request's (see detach)

    def first_token(self, seconds: float) -> None:
        if self.model is not None:
            self.model.set_attribute("gen_ai.server.time_to_first_token", seconds)

    def end_model_call(
        self,
        *,
        response_model: str | None,
        usage: Usage | None,
        finish_reasons: list[str],
        error: str | None,
        reply: bytes | None,
    ) -> None:
        span = self.model
        if span is None:
            return
        attributes = genai.response_attributes(response_model, usage, finish_reasons)
        if self.provider is not None:
            attributes["gen_ai.provider.name"] = self.provider
        if self.worker is not None:
            attributes["appliance.worker"] = self.worker
        if self.tracing.capture_content:
            content = genai.output_messages(reply, self.scrub)
            if content is not None:
                attributes["gen_ai.output.messages"] = content
        span.set_attributes(attributes)
        if error is not None:
            span.set_attribute("error.type", self.error or error)
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def end(self, *, route: str | None, status: int) -> None:
        server = self.server
        if not self.recording:
            return
        attributes: dict[str, Any] = {"http.response.status_code": status}
        if route is not None:
            attributes["http.route"] = route
            server.update_name(f"{self.method} {route}")
        if status >= 500:
            attributes["error.type"] = str(status)
            server.set_status(Status(StatusCode.ERROR))
        server.set_attributes(attributes)
        server.end()

    def detach(self) -> None:
        CURRENT.reset(self._token)


def _unchanged(value: Any) -> Any:
    return value


def start(exporting: Exporting, dropped: Callable[[int], object]) -> Tracing:
    """The process's tracer for ``exporting``."""
    return Tracing(exporting, dropped)
