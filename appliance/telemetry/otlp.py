"""Records on their way out: OpenTelemetry's OTLP/HTTP exporter, fed by the exporting thread.

The exporter (``OTLPSpanExporter``) owns the wire: the endpoint, the headers, the
``OTEL_EXPORTER_OTLP_*`` variables (compression, certificates, timeout), retries. Each
batch of :class:`~.spans.Record` becomes the SDK's ``ReadableSpan`` s, with one SDK
``Resource`` (``Resource.create``: ``OTEL_RESOURCE_ATTRIBUTES`` too) and one instrumentation
scope made at the start, and the exporter encodes and sends them. The SDK's span limits
on attribute length (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``...) are applied here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from appliance.telemetry.spans import Record

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

    def send(self, records: Sequence[Record]) -> bool:
        """Export ``records``; True when the collector took them."""
        spans = readable(records, self.resource, self.scope, self.max_length)
        return self.exporter.export(spans) is SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.exporter.shutdown()


def readable(
    records: Sequence[Record],
    resource: Resource,
    scope: InstrumentationScope,
    max_length: int | None = None,
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
        attributes = record.attributes
        if max_length is not None:
            attributes = {k: _clipped(v, max_length) for k, v in attributes.items()}
        out.append(
            ReadableSpan(
                record.name,
                context,
                parent,
                resource,
                attributes,
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


def _clipped(value: Any, limit: int) -> Any:
    """As the SDK's span limits cut an attribute's value (strings, and those in a list)."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, list):
        return [v[:limit] if isinstance(v, str) else v for v in value]
    return value
