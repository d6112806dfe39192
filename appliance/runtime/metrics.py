"""Prometheus metrics, correct across Granian's worker processes.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``appliance serve`` sets it to a fresh folder when
``server.processes`` is above 1),
every process writes its samples there and a scrape of any process sums them
(prometheus-client's multiprocess mode). Without it (tests, embedding the app), metrics
live in this app's own registry. Gauges of state (in flight, queued, worker health) are
refreshed from the cluster once a second by each process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

from appliance.wire.usage import Usage

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LOAD = (0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)
M = TypeVar("M", Counter, Gauge, Histogram)

_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)


class Metrics:
    """The appliance's metrics, registered in this app's registry."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)  # type: ignore[no-untyped-call]
        own = None if self.multiprocess else self.registry
        self.requests = Counter(
            "appliance_requests_total",
            "Requests answered, by route, model and status.",
            ["route", "model", "status"],
            registry=own,
        )
        self.latency = Histogram(
            "appliance_request_duration_seconds",
            "Time from request to the end of the response (whole stream).",
            ["route", "model"],
            buckets=_LATENCY,
            registry=own,
        )
        self.ttft = Histogram(
            "appliance_time_to_first_token_seconds",
            "Time from request to the first streamed chunk.",
            ["model"],
            buckets=_LATENCY,
            registry=own,
        )
        self.stream_failures = Counter(
            "appliance_stream_failures_total",
            "Streams that ended with an error after they began (answered 200 before the "
            "error, so appliance_requests_total counts them as 200), by model and error.",
            ["model", "error"],
            registry=own,
        )
        self.overhead = Histogram(
            "appliance_overhead_seconds",
            "Time spent in the appliance itself, excluding workers and queueing.",
            buckets=_OVERHEAD,
            registry=own,
        )
        self.tokens = Counter(
            "appliance_tokens_total",
            "Tokens in (prompt) and out (completion), from the replies' usage or, where a "
            "backend sends none, estimated from the text.",
            ["model", "kind"],
            registry=own,
        )
        self.cost = Counter(
            "appliance_cost",
            "Cost of the tokens used, by key and answering model, in billing.currency.",
            ["key", "model"],
            registry=own,
        )
        self.in_flight = Gauge(
            "appliance_in_flight_requests",
            "Requests on workers now.",
            ["model"],
            multiprocess_mode="livesum",
            registry=own,
        )
        self.queued = Gauge(
            "appliance_queued_requests",
            "Requests waiting for a worker now.",
            ["model"],
            multiprocess_mode="livesum",
            registry=own,
        )
        self.queue_wait = Histogram(
            "appliance_queue_wait_seconds",
            "Time requests waited for a worker's slot (0 when one was free), by the model "
            "that took them (or was asked) and the key's priority class.",
            ["model", "priority"],
            buckets=_LATENCY,
            registry=own,
        )
        self.spills = Counter(
            "appliance_spills_total",
            "Route targets passed over for their expected wait (spill_after_s), by the "
            "model passed over and why: queue (slots taken, a long queue) or load.",
            ["model", "reason"],
            registry=own,
        )
        self.worker_healthy = Gauge(
            "appliance_worker_healthy",
            "1 if the worker takes requests, else 0.",
            ["model", "worker"],
            multiprocess_mode="livemin",
            registry=own,
        )
        self.reloads = Counter(
            "appliance_reloads_total", "Config reloads, by result.", ["result"], registry=own
        )
        self.limiter_errors = Counter(
            "appliance_limiter_errors_total",
            "Calls to the shared rate limiter (Redis) that failed.",
            registry=own,
        )
        self.spans_dropped = Counter(
            "appliance_spans_dropped_total",
            "Trace spans not delivered: the export queue was full or the collector failed.",
            registry=own,
        )
        self.rate_limited = Counter(
            "appliance_rate_limited_total",
            "Requests refused by a key's rpm or tpm limit.",
            ["key"],
            registry=own,
        )

        self.request_log_dropped = Counter(
            "appliance_request_log_dropped_total",
            "Captured requests the request log did not keep, by reason: queue_full (the "
            "writer fell behind) or write_failed.",
            ["reason"],
            registry=own,
        )
        self.model_loads = Counter(
            "appliance_model_loads_total",
            "Loads of local models, by result: ok, or failed (one per failed attempt).",
            ["model", "result"],
            registry=own,
        )
        self.model_unloads = Counter(
            "appliance_model_unloads_total",
            "Unloads of local models, by reason: idle, memory_budget or admin.",
            ["model", "reason"],
            registry=own,
        )
        self.model_load_seconds = Histogram(
            "appliance_model_load_seconds",
            "Time a local model took to load, from the start of its load (once the memory "
            "budget has room) to a worker up.",
            ["model"],
            buckets=_LOAD,
            registry=own,
        )

        # The series of the metrics counted on the request path (see series()).
        self._series: dict[object, Any] = {}
        self._tokens = self.series(self.tokens)

    def model_loaded(self, model: str, seconds: float, *, ok: bool) -> None:
        """A local model loaded (``ok``), or an attempt to load it failed."""
        self.model_loads.labels(model, "ok" if ok else "failed").inc()
        if ok:
            self.model_load_seconds.labels(model).observe(seconds)

    def model_unloaded(self, model: str, reason: str) -> None:
        """A local model's workers were stopped."""
        self.model_unloads.labels(model, reason).inc()

    def exposition(self, *, keys: bool = True) -> bytes:
        """The Prometheus text format of every metric (all processes); without ``keys``,
        the series labelled with an API key's name are left out."""
        return generate_latest(self.registry if keys else _WithoutKeys(self.registry))

    def count_usage(self, model: str, usage: Usage) -> None:
        """Add a request's usage to the token counters."""
        if usage.prompt:
            self._tokens[model, "prompt"].inc(usage.prompt)
        if usage.completion:
            self._tokens[model, "completion"].inc(usage.completion)

    def series(self, metric: M) -> Series[M]:
        """``metric``'s series by label values, each made once (the same mapping on
        every call): what the request path counts into (see :class:`Series`)."""
        try:
            found: Series[M] = self._series[metric]
        except KeyError:
            found = self._series[metric] = Series(metric)
        return found


class Series(dict[tuple[object, ...], M]):
    """A metric's series (``metric.labels(*values)``) by their label values, each looked
    up once: ``labels()`` takes a lock and builds a tuple of strings on every call, a
    lookup here is one dict access. A series is made only once it is asked for (so it
    counts something). For bounded label values only (a route's template, a served
    model, a status, a priority class), as every label should be.
    """

    def __init__(self, metric: M) -> None:
        super().__init__()
        self.metric: M = metric

    def __missing__(self, values: tuple[object, ...]) -> M:
        child: M = self.metric.labels(*values)
        self[values] = child
        return child


class Recent:
    """Request rate and latency over the last minute, in this process, for the status page."""

    WINDOW = 60

    def __init__(self) -> None:
        self._seconds = [0] * self.WINDOW
        self._counts = [0] * self.WINDOW
        self._errors = [0] * self.WINDOW
        self._latency = [0.0] * self.WINDOW

    def add(self, now: float, latency_s: float, error: bool) -> None:
        second = int(now)
        slot = second % self.WINDOW
        if self._seconds[slot] != second:
            self._seconds[slot] = second
            self._counts[slot] = self._errors[slot] = 0
            self._latency[slot] = 0.0
        self._counts[slot] += 1
        self._errors[slot] += error
        self._latency[slot] += latency_s

    def summary(self, now: float) -> dict[str, float]:
        """Requests per second, mean latency (ms) and error share over the window."""
        oldest = int(now) - self.WINDOW
        live = [i for i, s in enumerate(self._seconds) if s > oldest]
        count = sum(self._counts[i] for i in live)
        return {
            "requests_per_s": round(count / self.WINDOW, 2),
            "mean_latency_ms": round(sum(self._latency[i] for i in live) / count * 1000, 2)
            if count
            else 0.0,
            "error_share": round(sum(self._errors[i] for i in live) / count, 4) if count else 0.0,
        }


class StreamStats:
    """Time to first token of one stream, and whether it failed."""

    __slots__ = ("_metrics", "_model", "_started", "first_s")

    def __init__(self, metrics: Metrics, model: str, started: float) -> None:
        self._metrics = metrics
        self._model = model
        self._started = started
        self.first_s: float | None = None  # the time to the first chunk, once it came

    def chunk(self, now: float) -> None:
        """A chunk arrived at ``now``."""
        if self.first_s is None:
            self.first_s = now - self._started
            self._metrics.ttft.labels(self._model).observe(self.first_s)

    def failed(self, error: str) -> None:
        """The stream ended with ``error`` (an error class's name: a bounded set)."""
        self._metrics.stream_failures.labels(self._model, error).inc()


def forget_dead_processes() -> list[int]:
    """Drop the live gauges that processes now gone left in a multi-process server's
    metrics folder (a replaced Granian process's in-flight count and worker health would
    otherwise stay in every scrape); the PIDs dropped."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder:
        return []
    dead = set()
    for path in Path(folder).glob("gauge_live*_*.db"):
        _, _, number = path.stem.rpartition("_")
        if number.isdigit() and not _alive(int(number)):
            dead.add(int(number))
    for pid in sorted(dead):
        multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
    return sorted(dead)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _WithoutKeys:
    """A registry's metrics less the samples that name an API key (label ``key``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if any("key" in sample.labels for sample in family.samples):
                family.samples = [s for s in family.samples if "key" not in s.labels]
                if not family.samples:
                    continue
            yield family
