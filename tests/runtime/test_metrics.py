"""/metrics across two Granian processes, the overhead header, and the admin key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.support.poll import until
from tests.support.server import RunningServer, metric_in

ADMIN = "admin-secret-42"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("m", ["a", "b", "c"], workers=2),
            server={"processes": 2, "admin_key": ADMIN},
            auth={
                "api_keys": [
                    {"name": "tiny", "key": "k-tiny", "rpm": 1},
                    {"name": "all", "key": "k-all"},
                ]
            },
        )
    )


def scrape(server: RunningServer) -> str:
    return server.metrics_text(ADMIN)


def chat(server: RunningServer, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "one two"}], **extra},
        headers={"Authorization": "Bearer k-all"},
    )


def test_counters_and_histograms_move_across_both_processes(server: RunningServer) -> None:
    before = scrape(server)
    route = "/v1/chat/completions"
    plain, streams = 40, 10
    pids = set()
    for _ in range(plain):
        assert chat(server).status_code == 200
    for _ in range(streams):
        response = chat(server, stream=True)
        assert sse_payloads(response.text)[-1] == "[DONE]"
    for _ in range(20):
        pids.add(
            httpx.get(
                f"{server.base_url}/status.json", headers={"Authorization": f"Bearer {ADMIN}"}
            ).json()["pid"]
        )
    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return metric_in(after, name, **labels) - metric_in(before, name, **labels)

    assert len(pids) == 2, "both Granian processes served requests"
    total = plain + streams
    assert delta("appliance_requests_total", route=route, model="m", status="200") == total
    assert delta("appliance_request_duration_seconds_count", route=route, model="m") == total
    assert delta("appliance_time_to_first_token_seconds_count", model="m") == streams
    # 2 prompt words and 3 reply chunks per request, plain or streamed (usage is read
    # from every reply).
    assert delta("appliance_tokens_total", model="m", kind="prompt") == 2 * total
    assert delta("appliance_tokens_total", model="m", kind="completion") == 3 * total
    assert delta("appliance_overhead_seconds_count") == total
    until(
        lambda: metric_in(scrape(server), "appliance_in_flight_requests", model="m") == 0,
        what="no request in flight",
    )
    until(
        lambda: metric_in(scrape(server), "appliance_worker_healthy", model="m", worker="m/0") == 1,
        what="worker m/0 healthy",
    )


def test_rate_limit_rejections_are_counted(server: RunningServer) -> None:
    before = metric_in(scrape(server), "appliance_rate_limited_total", key="tiny")
    headers = {"Authorization": "Bearer k-tiny"}
    codes = [
        httpx.post(
            f"{server.base_url}/v1/chat/completions",
            headers=headers,
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        ).status_code
        for _ in range(3)
    ]
    assert codes.count(429) >= 1  # rpm 1, counted per process here: at most two 200s
    after = metric_in(scrape(server), "appliance_rate_limited_total", key="tiny")
    assert after - before == codes.count(429)


def test_overhead_header_on_plain_and_stream(server: RunningServer) -> None:
    for response in (chat(server), chat(server, stream=True)):
        value = float(response.headers["x-appliance-overhead-ms"])
        # Milliseconds, and a part of the whole exchange as this client timed it.
        assert 0 <= value < response.elapsed.total_seconds() * 1000


def test_admin_key_protects_metrics_and_status(server: RunningServer) -> None:
    for path in ("/metrics", "/status.json"):
        response = httpx.get(f"{server.base_url}{path}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.base_url}/").status_code == 200  # the page asks for the key
    assert ADMIN not in server.log()  # raw text on purpose: in no line at all
