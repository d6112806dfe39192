"""A collector that is down, refusing or never answers: requests are answered as ever, and
the spans it did not take are counted in ``appliance_spans_dropped_total``."""

from __future__ import annotations

from collections.abc import Callable

import openai

from tests.conftest import cluster_config, scripted
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.poll import until
from tests.support.server import RunningServer, free_port

ASK = [{"role": "user", "content": "Say hello."}]
DROPPED = "appliance_spans_dropped_total"


def serve(start: Callable[..., RunningServer], endpoint: str) -> RunningServer:
    return start(
        cluster_config(scripted("bot", ["Hello there."]), telemetry={"otlp_endpoint": endpoint})
    )


def answer_many(server: RunningServer, count: int = 20) -> None:
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
    for _ in range(count):
        reply = api.chat.completions.create(model="bot", messages=ASK, stream=_ % 2 == 1)
        if isinstance(reply, openai.Stream):
            assert "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        else:
            assert reply.choices[0].message.content


def test_a_closed_port_drops_and_counts_the_spans(
    start_server: Callable[..., RunningServer],
) -> None:
    server = serve(start_server, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    answer_many(server)
    until(lambda: server.metric(DROPPED) >= 40, what="the dropped spans counted")
    # Said in the log too, at most once a minute: ours, and the exporter's reason.
    assert server.event_count("spans_dropped") == 1
    assert server.log().count("Failed to export") <= 1


def test_a_collector_that_refuses_drops_and_counts_the_spans(
    start_server: Callable[..., RunningServer], refusing: OTLPReceiver
) -> None:
    server = serve(start_server, refusing.endpoint)
    answer_many(server)
    until(lambda: server.metric(DROPPED) >= 40, what="the dropped spans counted")
    assert refusing.posts >= 1


def test_a_collector_that_never_answers_holds_up_no_request(
    start_server: Callable[..., RunningServer], hanging: OTLPReceiver
) -> None:
    server = serve(start_server, hanging.endpoint)
    answer_many(server, 4)
    until(lambda: hanging.posts >= 1, what="an export stuck at the collector")
    # While that export hangs, requests are answered and their spans wait in the queue.
    answer_many(server)
    until(lambda: server.metric(DROPPED) >= 8, what="the timed-out batch counted")
