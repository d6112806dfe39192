"""Nothing leaks: slots, upstream connections and file descriptors come back.

Clients that leave before the first byte and upstreams that refuse connections are what
production sees every day; the counts here are read from the running server.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer, descendants, free_port


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer], upstream: FakeUpstream) -> RunningServer:
    closed = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    return start_server(
        cluster_config(
            {
                "name": "up",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "ok"},
            },
            {
                "name": "refused",
                "backend": "openai",
                "workers": 2,
                "options": {"base_url": closed, "model": "ok"},
                "health": {"interval_s": 0, "cooldown_s": 0.2, "max_cooldown_s": 0.5},
            },
        )
    )


def in_flight(server: RunningServer, model: str) -> int:
    status = httpx.get(f"{server.base_url}/status.json").json()
    (entry,) = [m for m in status["models"] if m["name"] == model]
    return int(entry["in_flight"])


def leave_early(server: RunningServer, body: dict[str, Any], reached: Callable[[], bool]) -> None:
    """Send a request over a raw socket and close it, once ``reached`` says it is being
    served, before any byte of the answer."""
    payload = orjson.dumps(body)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + payload)
        until(reached, what="the request reaching the upstream")


@pytest.mark.parametrize("stream", [False, True])
def test_client_leaving_before_the_first_byte_frees_its_slot(
    server: RunningServer, upstream: FakeUpstream, stream: bool
) -> None:
    body = {
        "model": "up",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "x_first_delay_ms": 3000,
    }
    gone_before = len(upstream.disconnects)
    for _ in range(3):
        sent = len(upstream.requests)
        leave_early(server, body, lambda sent=sent: len(upstream.requests) > sent)
    until(lambda: in_flight(server, "up") == 0, what="every slot given back")
    if stream:
        # Streams are closed when their client leaves, before their answers were due:
        # an answer that went out (after 3 s) would not count as a disconnect.
        until(lambda: len(upstream.disconnects) >= gone_before + 3, what="three closes")
    else:
        # A plain call runs to its end (it is charged what the model produced): the
        # upstream answered each, none was cut.
        assert len(upstream.disconnects) == gone_before


def open_fds(pid: int) -> int:
    total = 0
    for process in descendants(pid):
        try:
            total += len(os.listdir(f"/proc/{process}/fd"))
        except OSError:
            continue
    return total


def test_refused_upstream_answers_only_documented_errors_and_leaks_no_fds(
    server: RunningServer,
) -> None:
    client = httpx.Client(base_url=server.base_url, timeout=10)
    body = {"model": "refused", "messages": [{"role": "user", "content": "hi"}]}
    statuses: dict[int, int] = {}

    def burst(count: int) -> None:
        for i in range(count):
            response = client.post("/v1/chat/completions", json={**body, "stream": i % 2 == 1})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            if response.status_code >= 500:
                error = response.json()["error"]
                assert error["code"] in ("upstream_unreachable", "service_unavailable"), error

    burst(50)  # warm-up: pools, caches, the first ejection
    before = open_fds(server.process.pid)
    burst(250)
    after = open_fds(server.process.pid)
    client.close()
    assert set(statuses) <= {502, 503}, statuses
    assert after - before <= 3, (before, after)
    assert in_flight(server, "refused") == 0
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
