"""The bounded batch: a full queue drops spans, a failed export drops its batch; both are
counted, and nothing waits on the exporter but its own thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from appliance.telemetry.batch import BATCH_SPANS, BoundedBatch
from appliance.telemetry.spans import INTERNAL, Record, trace_id
from tests.support.poll import settled, until


class Collector:
    """A sender that keeps what it gets, fails when told, and can be held up."""

    def __init__(self) -> None:
        self.exported: list[str] = []
        self.sizes: list[int] = []  # of each batch taken
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()
        self.waiting = threading.Event()

    def send(self, records: Sequence[Record]) -> bool:
        self.waiting.set()
        self.gate.wait()
        if self.failing:
            return False
        self.exported.extend(record.name for record in records)
        self.sizes.append(len(records))
        return True

    def shutdown(self) -> None:
        self.gate.set()


def traced(max_queue: int) -> tuple[BoundedBatch, Collector, list[int]]:
    collector, dropped = Collector(), [0]

    def count(n: int) -> None:
        dropped[0] += n

    batch = BoundedBatch(collector, count, max_queue=max_queue, timeout_s=1)
    batch.start()
    return batch, collector, dropped


def ended(batch: BoundedBatch, name: str) -> None:
    """A span named ``name`` ends."""
    batch.add(Record(name, trace_id(), 0, INTERNAL, {}).end())


def test_spans_are_exported_off_the_caller_thread() -> None:
    batch, collector, dropped = traced(100)
    for n in range(5):
        ended(batch, f"span {n}")
    assert batch.force_flush(10_000)
    assert collector.exported == [f"span {n}" for n in range(5)]
    assert dropped == [0]
    batch.shutdown()


def test_a_full_queue_drops_and_counts_what_does_not_fit() -> None:
    batch, collector, dropped = traced(10)
    collector.gate.clear()  # the collector hangs
    ended(batch, "first")
    batch.force_flush(0)
    until(collector.waiting.is_set, what="the exporter busy with the first batch")
    for n in range(25):  # ends at once, whatever the exporter does
        ended(batch, f"span {n}")
    assert dropped == [15]
    collector.gate.set()
    until(lambda: len(collector.exported) == 11, what="the queued spans exported")
    batch.shutdown()


def test_a_failed_export_counts_its_batch_and_pauses_the_exports() -> None:
    batch, collector, dropped = traced(100)
    collector.failing = True
    for n in range(7):
        ended(batch, f"span {n}")
    assert batch.force_flush(10_000)
    assert dropped == [7] and collector.exported == []
    # Right after a failure the next spans are dropped without reaching the exporter.
    collector.failing = False
    collector.waiting.clear()
    ended(batch, "later")
    assert batch.force_flush(10_000)
    assert dropped == [8] and not collector.waiting.is_set()
    batch.shutdown()


def test_under_load_each_export_carries_a_full_batch() -> None:
    """Spans that fill a batch go at once, in full batches; the rest waits for more (or
    the delay, or a flush): each export costs about as much CPU whatever it carries."""
    collector, dropped = Collector(), []
    batch = BoundedBatch(collector, dropped.append, max_queue=4096, timeout_s=1, delay_s=600)
    collector.gate.clear()
    for n in range(BATCH_SPANS):
        ended(batch, f"a{n}")
    batch.start()
    until(collector.waiting.is_set, what="the first full batch on its way")
    for n in range(5):  # while it is being sent
        ended(batch, f"b{n}")
    collector.gate.set()
    assert settled(lambda: len(collector.exported), quiet_s=0.5) == BATCH_SPANS
    for n in range(5, BATCH_SPANS):  # the queue fills a batch again
        ended(batch, f"b{n}")
    until(lambda: len(collector.exported) == 2 * BATCH_SPANS, what="the second full batch")
    ended(batch, "c")
    assert batch.force_flush(10_000)
    assert collector.sizes == [BATCH_SPANS, BATCH_SPANS, 1]
    assert collector.exported[BATCH_SPANS:] == [f"b{n}" for n in range(BATCH_SPANS)] + ["c"]
    assert dropped == []
    batch.shutdown()
