"""The bounded batch: a full queue drops spans, a failed export drops its batch; both are
counted, and nothing waits on the exporter but its own thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from appliance.telemetry.batch import BoundedBatch
from tests.support.poll import until


class Collector(SpanExporter):
    """An exporter that keeps what it gets, fails when told, and can be held up."""

    def __init__(self) -> None:
        self.exported: list[str] = []
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.waiting.set()
        self.gate.wait()
        if self.failing:
            return SpanExportResult.FAILURE
        self.exported.extend(span.name for span in spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.gate.set()


def traced(max_queue: int) -> tuple[BoundedBatch, Collector, list[int], TracerProvider]:
    collector, dropped = Collector(), [0]

    def count(n: int) -> None:
        dropped[0] += n

    batch = BoundedBatch(collector, count, max_queue=max_queue, timeout_s=1)
    provider = TracerProvider()
    provider.add_span_processor(batch)
    batch.start()
    return batch, collector, dropped, provider


def test_spans_are_exported_off_the_caller_thread() -> None:
    batch, collector, dropped, provider = traced(100)
    tracer = provider.get_tracer("test")
    for n in range(5):
        tracer.start_span(f"span {n}").end()
    assert batch.force_flush(10_000)
    assert collector.exported == [f"span {n}" for n in range(5)]
    assert dropped == [0]
    provider.shutdown()


def test_a_full_queue_drops_and_counts_what_does_not_fit() -> None:
    batch, collector, dropped, provider = traced(10)
    tracer = provider.get_tracer("test")
    collector.gate.clear()  # the collector hangs
    tracer.start_span("first").end()
    batch.force_flush(0)
    until(collector.waiting.is_set, what="the exporter busy with the first batch")
    for n in range(25):  # ends at once, whatever the exporter does
        tracer.start_span(f"span {n}").end()
    assert dropped == [15]
    collector.gate.set()
    until(lambda: len(collector.exported) == 11, what="the queued spans exported")
    provider.shutdown()


def test_a_failed_export_counts_its_batch_and_pauses_the_exports() -> None:
    batch, collector, dropped, provider = traced(100)
    collector.failing = True
    tracer = provider.get_tracer("test")
    for n in range(7):
        tracer.start_span(f"span {n}").end()
    assert batch.force_flush(10_000)
    assert dropped == [7] and collector.exported == []
    # Right after a failure the next spans are dropped without reaching the exporter.
    collector.failing = False
    collector.waiting.clear()
    tracer.start_span("later").end()
    assert batch.force_flush(10_000)
    assert dropped == [8] and not collector.waiting.is_set()
    provider.shutdown()
