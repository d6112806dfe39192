"""Records on their way out: OpenTelemetry's OTLP/HTTP exporter, fed by the exporting thread.

The exporter (``OTLPSpanExporter``) owns the wire: the endpoint, the headers, the
``OTEL_EXPORTER_OTLP_*`` variables (compression, certificates, timeout), retries. The
resource (``Resource.create``: ``OTEL_RESOURCE_ATTRIBUTES`` too) and the instrumentation
scope are the SDK's, made once; so are the span limits on an attribute's length
(``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``...), applied here.

A batch of :class:`~.spans.Record` s is encoded by :mod:`.protobuf` and handed, as bytes,
to the exporter's own sending path (its HTTP client: compression, retries, timeout).
Why: measured on batches of chat requests' spans, the SDK's route (each record made a
``ReadableSpan``, which the exporter's encoder turns into generated protobuf objects, then
sent) costs 31-39 µs of CPU a span; the direct bytes 4-7 µs sent, 4 µs of it encoding.
With two spans a request, the SDK's route alone would cost tracing's whole 15% budget on
a proxied request (see the README's Tracing). That path is the exporter's private
``_client.export``: should an exporter of another version have none, the batch takes the
SDK's route (:func:`readable`), which the tests also keep: it is what the direct bytes are
compared to (they decode to the very message the SDK's encoder makes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from appliance.telemetry import protobuf
from appliance.telemetry.spans import SERVER, Record

SCOPE = "appliance"
KINDS = {1: SpanKind.INTERNAL, 2: SpanKind.SERVER, 3: SpanKind.CLIENT}
SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class Wire:
    """Sends batches of records with OpenTelemetry's OTLP/HTTP exporter.

    Args:
        endpoint: The collector's traces URL.
        headers: Sent with each export.
        timeout_s: One export's limit, retries included.
        service_name: The resource's ``service.name``.
    """

    def __init__(
        self, endpoint: str, headers: dict[str, str], timeout_s: float, service_name: str
    ) -> None:
        self.exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout_s)
        self.resource = Resource.create({"service.name": service_name})
        self.scope = InstrumentationScope(SCOPE)
        self.max_length = SpanLimits().max_span_attribute_length
        self._frame = frame(self.resource, self.scope)
        self._post = _sending_path(self.exporter)

    def send(self, records: Sequence[Record]) -> bool:
        """Export ``records``; True when the collector took them."""
        if self.max_length is not None:
            records = [clipped(record, self.max_length) for record in records]
        if self._post is None:
            spans = readable(records, self.resource, self.scope)
            return self.exporter.export(spans) is SpanExportResult.SUCCESS
        return bool(self._post(protobuf.request(records, *self._frame)).success)

    def shutdown(self) -> None:
        self.exporter.shutdown()  # type: ignore[no-untyped-call]


def frame(resource: Resource, scope: InstrumentationScope) -> tuple[bytes, bytes, tuple[str, str]]:
    """The serialized resource and scope and their schema URLs, by the SDK's encoder (of
    one span, of which only these are kept)."""
    record = Record("frame", 1, 0, SERVER, {})
    encoded = encode_spans(readable([record.end()], resource, scope)).resource_spans[0]
    scope_spans = encoded.scope_spans[0]
    return (
        encoded.resource.SerializeToString(),
        scope_spans.scope.SerializeToString(),
        (encoded.schema_url, scope_spans.schema_url),
    )


def readable(
    records: Sequence[Record], resource: Resource, scope: InstrumentationScope
) -> list[ReadableSpan]:
    """``records`` as the SDK's finished spans."""
    out = []
    for record in records:
        state = TraceState(_members(record.tracestate))
        context = SpanContext(record.trace_id, record.span_id, False, SAMPLED, state)
        parent = (
            SpanContext(record.trace_id, record.parent_id, record.remote_parent, SAMPLED, state)
            if record.parent_id
            else None
        )
        out.append(
            ReadableSpan(
                record.name,
                context,
                parent,
                resource,
                record.attributes,
                kind=KINDS[record.kind],
                status=Status(StatusCode(record.status), record.description),
                start_time=record.start_ns,
                end_time=record.end_ns,
                instrumentation_scope=scope,
            )
        )
    return out


def _members(tracestate: str) -> list[tuple[str, str]]:
    if not tracestate:
        return []
    return [(k, v) for k, _, v in (m.partition("=") for m in tracestate.split(","))]


def clipped(record: Record, limit: int) -> Record:
    """``record`` with its attribute values cut as the SDK's span limits say."""
    record.attributes = {k: _clipped(v, limit) for k, v in record.attributes.items()}
    return record


def _sending_path(exporter: OTLPSpanExporter) -> Callable[[bytes], Any] | None:
    """The exporter's HTTP client's ``export(bytes)`` (compression, retries, timeout), if
    this version of it has one; its result says ``success``."""
    client = getattr(exporter, "_client", None)
    post = getattr(client, "export", None)
    return post if callable(post) else None


def _clipped(value: Any, limit: int) -> Any:
    """As the SDK's span limits cut an attribute's value (strings, and those in a list)."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, list):
        return [v[:limit] if isinstance(v, str) else v for v in value]
    return value
