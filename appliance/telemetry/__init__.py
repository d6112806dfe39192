"""OpenTelemetry traces: a request's spans, from the edge to the model and back.

Tracing is off unless the config's ``telemetry:`` section (or an ``OTEL_*`` variable) names
a collector (:mod:`.settings`). Off, nothing of OpenTelemetry is imported and each
instrumentation point below the edge costs one context-variable read (:mod:`.context`).
On, :mod:`.tracer` records each request's spans as plain records (:mod:`.spans`) into a
bounded batch (:mod:`.batch`), exported over OTLP/HTTP by OpenTelemetry's exporter
(:mod:`.otlp`): a collector that is down, slow or refusing never
slows or fails a request; the spans it does not take are dropped and counted
(``appliance_spans_dropped_total``).
"""

from appliance.telemetry.context import CURRENT, RequestTrace, attempt, traceparent, waiting

__all__ = ["CURRENT", "RequestTrace", "attempt", "traceparent", "waiting"]
