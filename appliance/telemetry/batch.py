"""Spans on their way to the collector: a bounded queue and one exporting thread.

OpenTelemetry's ``BatchSpanProcessor`` drops spans when its queue is full with nothing but
a log line, and does not count the batches its exporter failed to deliver. This batch
does the same job and counts both (``appliance_spans_dropped_total``): a span ends on the
request's path with one append of its :class:`~.spans.Record` to a bounded deque; a thread
exports the queue in batches (:class:`~.otlp.Wire`: OTLP/HTTP, each export bounded by the
exporter's timeout, retries included): full batches of :data:`BATCH_SPANS` as soon as
there are, what is left once :data:`DELAY_S` passes without. A collector that is down,
slow or refusing only makes the queue fill and the count rise; after a failed export the
next :data:`PAUSE_S` seconds of spans are dropped without being encoded or sent, so a
collector that is down costs less CPU than one that takes the spans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import structlog

from appliance.telemetry.spans import Record

log = structlog.get_logger("appliance.telemetry")

BATCH_SPANS = 512
DELAY_S = 1.0  # a batch not full waits this long for more spans
REPORT_EVERY_S = 60.0  # drops are logged at most this often (they are counted always)
PAUSE_S = 5.0  # after a failed export, spans are dropped unsent this long


class Sender(Protocol):
    """Where batches go (:class:`~.otlp.Wire`)."""

    def send(self, records: Sequence[Record]) -> bool:
        """Export ``records``; True when the collector took them."""

    def shutdown(self) -> None:
        """No more exports."""


class BoundedBatch:
    """Exports ended spans in batches off the request path; see the module docstring.

    Args:
        exporter: Where batches go.
        dropped: Called with the number of spans dropped (a metric's ``inc``).
        max_queue: Spans that may wait; one more is dropped.
        timeout_s: The exporter's own timeout, to bound the last flush at shutdown.
        delay_s: How long a batch not full waits for more spans.
    """

    def __init__(
        self,
        exporter: Sender,
        dropped: Callable[[int], object],
        *,
        max_queue: int,
        timeout_s: float,
        delay_s: float = DELAY_S,
    ) -> None:
        self.exporter = exporter
        self.dropped = dropped
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.delay_s = delay_s
        self._queue: deque[Record] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._draining = False  # the next export sends the whole queue (a flush asked)
        self._thread: threading.Thread | None = None
        self._unreported = 0
        self._reported_at = 0.0
        self._resume_at = 0.0  # exports pause until then after one failed

    def start(self) -> None:
        """Start the exporting thread (in the serving process, after any fork)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="appliance-spans", daemon=True)
            self._thread.start()

    def add(self, span: Record) -> None:
        """Queue an ended span (dropped, and counted, when the queue is full)."""
        queue = self._queue
        if self._stopping or len(queue) >= self.max_queue:
            self._drop(1)
            return
        queue.append(span)
        if len(queue) >= BATCH_SPANS and not self._wake.is_set():
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued now; True if it was sent within the time."""
        deadline = time.monotonic() + timeout_millis / 1000
        self._idle.clear()
        self._draining = True
        self._wake.set()
        while time.monotonic() < deadline:
            if self._idle.wait(0.05) and not self._queue:
                return True
            self._draining = True
            self._wake.set()
        return False

    def shutdown(self) -> None:
        """Stop taking spans; send what is queued within about two export timeouts."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(2 * self.timeout_s + 1)
        self.exporter.shutdown()

    def _run(self) -> None:
        while True:
            # Woken by a full batch, only full batches go: under load every POST carries
            # BATCH_SPANS spans (each POST costs about a millisecond of CPU, whatever it
            # carries). The rest goes when DELAY_S passes with no full batch, or on a flush.
            full = self._wake.wait(self.delay_s) and not self._draining
            self._wake.clear()
            self._draining = False
            self._export_queued(full_only=full and not self._stopping)
            self._idle.set()
            if self._stopping:
                self._export_queued(full_only=False)
                return

    def _export_queued(self, *, full_only: bool) -> None:
        queue = self._queue
        while len(queue) >= BATCH_SPANS if full_only else queue:
            batch = [queue.popleft() for _ in range(min(BATCH_SPANS, len(queue)))]
            if time.monotonic() < self._resume_at:
                self._drop(len(batch))  # the collector failed just now: not even encoded
                continue
            try:
                ok = self.exporter.send(batch)
            except Exception:
                ok = False
            if not ok:
                self._resume_at = time.monotonic() + PAUSE_S
                self._drop(len(batch))

    def _drop(self, count: int) -> None:
        self.dropped(count)
        self._unreported += count
        now = time.monotonic()
        if now - self._reported_at >= REPORT_EVERY_S:
            self._reported_at = now
            unreported, self._unreported = self._unreported, 0
            log.warning(
                "spans_dropped",
                spans=unreported,
                why="the export queue is full or the collector did not take them",
            )


class Seldom(logging.Filter):
    """Lets one record through per :data:`REPORT_EVERY_S`: the exporter's own lines about
    a collector that is down (one per failed batch otherwise) say why, without a flood."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -REPORT_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now - self._last < REPORT_EVERY_S:
            return False
        self._last = now
        return True
