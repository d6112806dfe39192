"""The request path's metric series: looked up once each, with the values of every call."""

from __future__ import annotations

from appliance.runtime.metrics import Metrics
from appliance.wire.usage import Usage


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_token_counts_add_up_and_a_kind_never_counted_has_no_series() -> None:
    metrics = Metrics()
    metrics.count_usage("m", Usage(3, 0, 3))
    metrics.count_usage("m", Usage(4, 0, 4))
    assert sample(metrics, "appliance_tokens_total", model="m", kind="prompt") == 7
    assert sample(metrics, "appliance_tokens_total", model="m", kind="completion") is None
    metrics.count_usage("m", Usage(1, 2, 3))
    metrics.count_usage("other", Usage(0, 5, 5))
    assert sample(metrics, "appliance_tokens_total", model="m", kind="prompt") == 8
    assert sample(metrics, "appliance_tokens_total", model="m", kind="completion") == 2
    assert sample(metrics, "appliance_tokens_total", model="other", kind="completion") == 5
    assert sample(metrics, "appliance_tokens_total", model="other", kind="prompt") is None


def test_a_metrics_series_are_made_once_each_and_count_as_labels_would() -> None:
    """Metrics.series: the one remembered labels() of the request path (Counting, the
    token counters). An int label value counts where its text would."""
    metrics = Metrics()
    requests = metrics.series(metrics.requests)
    assert metrics.series(metrics.requests) is requests  # one mapping per metric
    assert metrics.series(metrics.latency) is not requests
    assert requests == {}  # nothing made before it is asked for
    first = requests["/v1/chat/completions", "m", 200]
    assert requests["/v1/chat/completions", "m", 200] is first
    first.inc()
    requests["/v1/chat/completions", "m", 404].inc(2)
    metrics.requests.labels("/v1/chat/completions", "m", "200").inc()  # the same series
    labels = {"route": "/v1/chat/completions", "model": "m"}
    assert sample(metrics, "appliance_requests_total", **labels, status="200") == 2
    assert sample(metrics, "appliance_requests_total", **labels, status="404") == 2
    metrics.series(metrics.latency)["/v1/chat/completions", "m"].observe(0.2)
    assert sample(metrics, "appliance_request_duration_seconds_count", **labels) == 1
    assert len(requests) == 2
