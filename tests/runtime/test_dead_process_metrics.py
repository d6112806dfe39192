"""A Granian process killed and replaced leaves no gauge behind (``server.processes: 2``).

One of the two processes is made to hold what would stay in ``/metrics`` after its
death: a request in flight, and its view of a model's worker as unhealthy (the upstream's
health probe fails meanwhile). It is killed with SIGKILL (nothing of its own runs), the
probe heals, and once Granian has replaced it ``/metrics`` shows the model's worker
healthy again and nothing in flight, as the live processes say.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import in_background, until
from tests.support.server import RunningServer, descendants


class ProbedUpstream(FakeUpstream):
    """The fake, whose health probe a test can make fail (503) and heal."""

    probe_fails = False

    async def _models(self, request: web.Request) -> web.Response:
        if self.probe_fails:
            error = {"message": "probe refused", "type": "fake_error", "code": None}
            return web.json_response({"error": {**error, "param": None}}, status=503)
        return await super()._models(request)


@pytest.fixture
def probed() -> Iterator[ProbedUpstream]:
    fake = ProbedUpstream()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def upstream_model(name: str, fake: FakeUpstream, **health: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "retries": 0,
        "timeout_s": 300,
        "options": {"base_url": fake.base_url, "model": "ok"},
        "health": {"interval_s": 0, **health},
    }


def pinned_to(server: RunningServer, pid: int | None) -> tuple[httpx.Client, int]:
    """A client whose one kept-alive connection is served by process ``pid`` (any, if
    None), and that process's pid."""

    def attempt() -> tuple[httpx.Client, int] | None:
        client = httpx.Client(
            base_url=server.base_url,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=httpx.Timeout(10, read=300),
        )
        answered = int(client.get("/status.json").json()["pid"])
        if pid is None or answered == pid:
            return client, answered
        client.close()
        return None

    return until(attempt, what=f"a connection served by process {pid}")


def healthy_here(client: httpx.Client, model: str) -> bool:
    models = {m["name"]: m for m in client.get("/status.json").json()["models"]}
    return bool(models[model]["available"])


def test_a_killed_process_leaves_no_gauges_once_replaced(
    start_server: Callable[..., RunningServer], probed: ProbedUpstream
) -> None:
    config = cluster_config(
        upstream_model(
            "flaky", probed, interval_s=0.3, timeout_s=2, cooldown_s=0.3, max_cooldown_s=0.6
        ),
        upstream_model("held", probed),
        server={"processes": 2},
    )
    server = start_server(config)
    workers = set(descendants(server.process.pid)) - {server.process.pid}

    status, victim = pinned_to(server, None)
    assert victim in workers
    [survivor] = workers - {victim}

    # The victim sees the model's worker unhealthy, and has a request in flight.
    probed.probe_fails = True
    until(lambda: not healthy_here(status, "flaky"), what="the victim ejecting the worker")
    holder, _ = pinned_to(server, victim)
    body = {
        "model": "held",
        "messages": [{"role": "user", "content": "hold on"}],
        "x_first_delay_ms": 120_000,
    }
    request = in_background(lambda: holder.post("/v1/chat/completions", json=body), timeout=300)
    until(
        lambda: server.metric("appliance_in_flight_requests", model="held") == 1,
        what="the held request counted in flight",
    )
    assert server.metric("appliance_worker_healthy", model="flaky") == 0

    os.kill(victim, signal.SIGKILL)
    with pytest.raises(httpx.TransportError):
        request()  # its process is gone
    holder.close()
    status.close()
    probed.probe_fails = False

    def replaced() -> set[int]:
        now = set(descendants(server.process.pid)) - {server.process.pid}
        return now if victim not in now and len(now - {survivor}) >= 1 else set()

    newcomers = until(replaced, timeout=60, what="Granian replacing the killed process") - {
        survivor
    }
    fresh, fresh_pid = pinned_to(server, None)
    fresh.close()

    until(
        lambda: (
            server.metric("appliance_worker_healthy", model="flaky") == 1
            and server.metric("appliance_in_flight_requests", model="held") == 0
        ),
        timeout=60,
        what="the dead process's gauges dropped from /metrics",
    )
    assert fresh_pid in {survivor, *newcomers}
    assert server.event_count("metrics_of_dead_processes_dropped") >= 1
