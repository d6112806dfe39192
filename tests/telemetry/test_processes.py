"""With several serving processes, each exports its own requests' spans."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import openai

from tests.conftest import cluster_config, scripted
from tests.support.otlp_receiver import OTLPReceiver, trace
from tests.support.server import RunningServer


def test_every_process_exports_its_spans(
    start_server: Callable[..., RunningServer], own_receiver: OTLPReceiver
) -> None:
    server = start_server(
        cluster_config(
            scripted("bot", ["Hi."]),
            server={"processes": 2},
            telemetry={"otlp_endpoint": own_receiver.endpoint},
        )
    )
    traces = [secrets.token_hex(16) for _ in range(12)]
    for trace_id in traces:
        # A new connection each time: requests spread over the processes.
        with openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0) as api:
            api.chat.completions.create(
                model="bot",
                messages=[{"role": "user", "content": "Hi"}],
                extra_headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            )
    for trace_id in traces:
        spans = trace(own_receiver, trace_id)
        assert spans["chat"][0].parent_id == spans["server"][0].span_id
    assert server.metric("appliance_spans_dropped_total") == 0
