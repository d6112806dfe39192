"""A real OTLP/HTTP trace receiver for tests, on a loopback port in a thread.

It decodes what the appliance exports (``POST /v1/traces``, protobuf, gzipped or not) with
``opentelemetry-proto``, as a collector would, and keeps each span as a :class:`Span`.
``mode`` says how it answers: ``ok`` (200), ``refuse`` (503 to everything), ``hang`` (takes
the request and never answers, until stopped).
"""

from __future__ import annotations

import gzip
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.poll import until

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


@dataclass
class Span:
    """One span as the collector got it (ids as lowercase hex)."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    events: list[str]
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


@dataclass
class OTLPReceiver:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    mode: str = "ok"
    spans: list[Span] = field(default_factory=list)
    posts: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._released = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._post(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL (``telemetry.otlp_endpoint``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> OTLPReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    def named(self, prefix: str) -> list[Span]:
        """The spans whose name starts with ``prefix``."""
        with self._lock:
            return [s for s in self.spans if s.name.startswith(prefix)]

    def in_trace(self, trace_id: str) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, prefix: str, count: int = 1, **attributes: Any) -> list[Span]:
        """The spans named ``prefix...`` with ``attributes``, once ``count`` have come."""

        def found() -> list[Span] | None:
            spans = [
                s
                for s in self.named(prefix)
                if all(s.attributes.get(k) == v for k, v in attributes.items())
            ]
            return spans if len(spans) >= count else None

        return until(found, what=f"{count} span(s) {prefix!r} {attributes}")

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length)
        with self._lock:
            self.posts += 1
            self.headers.append({k.lower(): v for k, v in handler.headers.items()})
        if self.mode == "hang":
            self._released.wait()
            return
        if self.mode == "refuse" or handler.path != "/v1/traces":
            handler.send_response(503 if self.mode == "refuse" else 404)
            handler.send_header("content-length", "0")
            handler.end_headers()
            return
        if handler.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        request = ExportTraceServiceRequest()
        request.ParseFromString(raw)
        decoded = list(_spans(request))
        with self._lock:
            self.spans.extend(decoded)
        body = ExportTraceServiceResponse().SerializeToString()
        handler.send_response(200)
        handler.send_header("content-type", "application/x-protobuf")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def caller() -> tuple[str, dict[str, str]]:
    """A caller's new trace: its id and the ``traceparent`` header that continues it."""
    trace_id = secrets.token_hex(16)
    return trace_id, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}


def spans_of(receiver: OTLPReceiver, trace_id: str) -> list[Span]:
    """A request's spans, once its server span (the last to end) has come."""
    return until(
        lambda: receiver.in_trace(trace_id),
        accept=lambda spans: any(s.kind == "server" for s in spans),
        what=f"the spans of trace {trace_id}",
    )


def trace(receiver: OTLPReceiver, trace_id: str) -> dict[str, list[Span]]:
    """A request's spans by kind of name (``server``, ``chat``, ``attempt``, ``queue``...),
    once its server span (the last to end) has come."""
    out: dict[str, list[Span]] = {}
    for span in spans_of(receiver, trace_id):
        key = "server" if span.kind == "server" else span.name.split(" ")[0]
        out.setdefault(key, []).append(span)
    return out


def _spans(request: ExportTraceServiceRequest) -> Any:
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield Span(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex(),
                    kind=KINDS.get(span.kind, str(span.kind)),
                    attributes={a.key: _value(a.value) for a in span.attributes},
                    status=span.status.code,
                    events=[event.name for event in span.events],
                    resource=resource,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                )


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, which) if which else None
