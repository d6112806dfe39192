"""Through an alias: the reply names the model that answered; the request keeps the alias.

The README's rule ("Names through an alias"): figures about the request (requests,
latency, the access line's ``model``) carry the name the client asked for; figures about
the work (tokens, cost, the ledger, the access line's ``served_by``) the model that did it.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer, free_port, metric_in

# The first target refuses connections, so the second one answers.
CONFIG = cluster_config(
    {
        "name": "dead",
        "backend": "openai",
        "health": {"interval_s": 0},
        "options": {"base_url": f"http://127.0.0.1:{free_port()}/v1"},
    },
    scripted("live", ["Hello", " world."]),
    routes=[{"alias": "chat", "targets": ["dead", "live"]}],
)


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(CONFIG)


def test_an_alias_request_is_counted_as_asked_and_its_work_as_done(server: RunningServer) -> None:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "live"  # the model that answered

    metrics = server.metrics_text()
    requests = "appliance_requests_total"
    assert metric_in(metrics, requests, model="chat", status="200") == 1
    assert metric_in(metrics, requests, model="live") == 0
    usage = reply.json()["usage"]
    tokens = "appliance_tokens_total"
    completion = metric_in(metrics, tokens, model="live", kind="completion")
    assert completion == usage["completion_tokens"]
    assert metric_in(metrics, tokens, model="chat") == 0

    # The access line is written after the response went out: it may take a moment.
    [access] = until(lambda: server.events("request", model="chat"), what="the access line")
    assert access["served_by"] == "live"


def test_a_request_that_reached_no_model_has_no_served_by(server: RunningServer) -> None:
    body = {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body).status_code == 404
    [line] = until(lambda: server.events("request", model="nope"), what="the access line")
    assert "served_by" not in line
