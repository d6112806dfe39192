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
