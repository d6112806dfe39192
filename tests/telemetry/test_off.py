"""Tracing off (the default): no spans, no SDK, and the upstream gets no ``traceparent``,
not even a caller's (the appliance forwards none of a caller's headers). The standard
``OTEL_*`` variables turn it on without the YAML."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import openai

from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.poll import settled, until
from tests.support.server import RunningServer

ASK = [{"role": "user", "content": "Say hello."}]
CALLERS = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def proxy(upstream: FakeUpstream) -> dict[str, object]:
    return {"name": "up", "backend": "openai", "options": {"base_url": upstream.base_url}}


def ask(server: RunningServer) -> None:
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
    api.chat.completions.create(model="up", messages=ASK, extra_headers=CALLERS)


def test_off_sends_no_spans_and_no_traceparent_upstream(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, own_receiver: OTLPReceiver
) -> None:
    # The collector is named, and OTEL_SDK_DISABLED turns tracing off all the same.
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": own_receiver.endpoint, "OTEL_SDK_DISABLED": "true"}
    server = start_server(cluster_config(proxy(upstream)), env)
    before = len(upstream.requests)
    ask(server)
    (seen,) = upstream.requests[before:]
    assert "traceparent" not in seen.headers
    (line,) = until(lambda: server.events("request", path="/v1/chat/completions"))
    assert "trace_id" not in line and "span_id" not in line
    assert settled(lambda: own_receiver.posts, quiet_s=1.5) == 0
    assert "appliance_spans_dropped_total 0.0" in server.metrics_text()


def test_the_otel_endpoint_variable_turns_tracing_on(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, own_receiver: OTLPReceiver
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": own_receiver.endpoint, "OTEL_SERVICE_NAME": "from-env"}
    server = start_server(cluster_config(proxy(upstream)), env)
    ask(server)
    (span,) = own_receiver.wait_for("chat up")
    assert span.trace_id == CALLERS["traceparent"].split("-")[1]
    assert span.resource["service.name"] == "from-env"


def test_off_imports_nothing_of_opentelemetry() -> None:
    program = (
        "import sys\n"
        "from appliance.config import ApplianceConfig\n"
        "from appliance.http.app import create_app\n"
        "create_app(ApplianceConfig.model_validate("
        "{'models': [{'name': 'bot', 'backend': 'scripted'}]}))\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_a_trace_not_sampled_exports_nothing_and_still_propagates(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, own_receiver: OTLPReceiver
) -> None:
    telemetry = {"otlp_endpoint": own_receiver.endpoint, "sample_ratio": 0}
    server = start_server(cluster_config(proxy(upstream), telemetry=telemetry))
    before = len(upstream.requests)
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
    api.chat.completions.create(model="up", messages=ASK)  # no caller's trace: ours, unsampled
    (seen,) = upstream.requests[before:]
    _, trace_id, _, flags = seen.headers["traceparent"].split("-")
    assert int(flags, 16) & 1 == 0  # not sampled, as the upstream is told
    (line,) = until(lambda: server.events("request", path="/v1/chat/completions"))
    assert line["trace_id"] == trace_id  # logs still join the upstream's
    assert settled(lambda: own_receiver.posts, quiet_s=1.5) == 0
