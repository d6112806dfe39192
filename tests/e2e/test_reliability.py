"""Failover, health, timeouts, disconnects and limits against the real server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until, until_async
from tests.support.server import RunningServer

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def two_upstreams() -> Iterator[list[FakeUpstream]]:
    fakes = [FakeUpstream().start(), FakeUpstream().start()]
    yield fakes
    for fake in fakes:
        fake.stop()


def upstream_model(name: str, urls: list[str], **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "options": {"base_url": urls, "model": "ok", **fields.pop("options", {})},
        **fields,
    }


def readyz(server: RunningServer) -> dict[str, Any]:
    return httpx.get(f"{server.base_url}/readyz", timeout=5).json()  # type: ignore[no-any-return]


def healthy(server: RunningServer, model: str) -> list[bool]:
    return [w["healthy"] for w in readyz(server)["models"][model]["workers"]]


def test_killed_upstream_fails_over_leaves_rotation_and_comes_back(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    first, second = two_upstreams
    server = start_server(
        cluster_config(
            upstream_model(
                "pair",
                [first.base_url, second.base_url],
                health={"interval_s": 0.5, "timeout_s": 0.5, "failures": 2},
            )
        )
    )
    failures: list[str] = []
    sent = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal sent
        with httpx.Client(base_url=server.base_url, timeout=10) as client:
            while not stop.is_set():
                body = {"model": "pair", "messages": MESSAGES}
                response = client.post("/v1/chat/completions", json=body)
                sent += 1
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        until(lambda: sent >= 10 and first.requests, what="load on both upstreams")
        port = first.port
        first.stop()
        # Health probes every 0.5 s, two failures: it leaves well before this deadline,
        # which only health checks that never eject reach.
        until(lambda: not healthy(server, "pair")[0], timeout=15, what="the dead upstream out")
        out_at = sent
        until(lambda: sent >= out_at + 10, what="load served while one upstream is out")
        revived = FakeUpstream(port=port).start()
        try:
            until(lambda: healthy(server, "pair")[0], timeout=15, what="the revived one back")
            until(lambda: revived.requests, what="the restarted upstream taking traffic again")
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
            revived.stop()
    finally:
        stop.set()

    assert failures == []


def test_probes_never_call_a_model_route(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    fake = two_upstreams[0]
    start_server(
        cluster_config(
            upstream_model("probed", [fake.base_url], health={"interval_s": 0.1}, workers=3)
        )
    )
    until(lambda: fake.probes >= 10, what="ten probes")
    assert fake.requests == []


def test_hanging_upstream_gives_504_while_other_models_serve(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    fake = two_upstreams[0]
    server = start_server(
        cluster_config(
            upstream_model(
                "stuck",
                [fake.base_url],
                retries=0,
                options={"model": "hang", "first_byte_timeout_s": 1.0},
            ),
            scripted("quick", ["fine"]),
        )
    )

    async def both() -> tuple[httpx.Response, float, httpx.Response, bool]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            start = time.monotonic()
            stuck = asyncio.create_task(
                client.post("/v1/chat/completions", json={"model": "stuck", "messages": MESSAGES})
            )
            await until_async(lambda: fake.requests, what="the stuck request upstream")
            quick = await client.post(
                "/v1/chat/completions", json={"model": "quick", "messages": MESSAGES}
            )
            stuck_still_waiting = not stuck.done()
            return await stuck, time.monotonic() - start, quick, stuck_still_waiting

    stuck, stuck_at, quick, stuck_still_waiting = asyncio.run(both())
    assert stuck.status_code == 504
    assert stuck.json()["error"]["code"] == "upstream_timeout"
    assert stuck_at > 0.9, "first_byte_timeout_s is 1.0"
    assert quick.status_code == 200
    assert stuck_still_waiting, "the quick model answered while the stuck one still waited"


def test_idle_stream_times_out_with_an_error_event(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    fake = two_upstreams[0]
    server = start_server(
        cluster_config(upstream_model("idle", [fake.base_url], options={"idle_timeout_s": 0.3}))
    )
    body = {
        "model": "idle",
        "messages": MESSAGES,
        "stream": True,
        "x_chunks": 3,
        "x_chunk_delay_ms": 1000,
    }
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "upstream_timeout"


def test_an_idle_stream_times_out_while_pings_go_out(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    """The relay's pings to the client are not the upstream's sign of life: an upstream
    silent for idle_timeout_s ends the stream with the timeout's error event, however
    many pings went out meanwhile."""
    fake = two_upstreams[0]
    server = start_server(
        cluster_config(
            upstream_model("idle", [fake.base_url], options={"idle_timeout_s": 0.5}),
            server={"stream_ping_s": 0.1},
        )
    )
    body = {
        "model": "idle",
        "messages": MESSAGES,
        "stream": True,
        "x_chunks": 3,
        "x_chunk_delay_ms": 1500,
    }
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    assert ": ping" in response.text, "pings went out while the upstream was silent"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "upstream_timeout"


def test_a_plain_reply_may_take_longer_than_the_idle_timeout_to_begin(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    """A plain reply's headers come when it is fully generated: its wait is
    first_byte_timeout_s's, not idle_timeout_s's (the silence between two reads)."""
    options = {"idle_timeout_s": 0.3, "first_byte_timeout_s": 10.0}
    server = start_server(
        cluster_config(upstream_model("slow-start", [two_upstreams[0].base_url], options=options))
    )
    body = {"model": "slow-start", "messages": MESSAGES, "x_first_delay_ms": 1000}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fake reply"


def test_a_plain_reply_that_stalls_after_its_headers_times_out(
    two_upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    fake = two_upstreams[0]
    options = {"model": "ok+slow-body", "idle_timeout_s": 0.3, "first_byte_timeout_s": 10.0}
    server = start_server(
        cluster_config(upstream_model("stalls", [fake.base_url], options=options))
    )
    body = {"model": "stalls", "messages": MESSAGES, "x_body_delay_ms": 5000}
    started = time.monotonic()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 4.5, "the idle timeout (0.3 s), not the body's delay"
    # The same upstream answering at once still serves (the pool is not poisoned).
    quick = {"model": "stalls", "messages": MESSAGES, "x_body_delay_ms": 0}
    again = httpx.post(f"{server.base_url}/v1/chat/completions", json=quick, timeout=10)
    assert again.status_code == 200, again.text


@pytest.fixture(scope="module")
def patient() -> Iterator[tuple[FakeUpstream, RunningServer]]:
    """An upstream that takes its time, behind an appliance (own module-level pair)."""
    import tempfile
    from pathlib import Path

    fake = FakeUpstream().start()
    with tempfile.TemporaryDirectory() as tmp:
        server = RunningServer(
            cluster_config(
                upstream_model(
                    "patient", [fake.base_url], max_concurrency=4, health={"interval_s": 0}
                )
            ),
            Path(tmp),
        )
        try:
            yield fake, server
        finally:
            server.stop()
            fake.stop()


def in_flight(server: RunningServer) -> int:
    return sum(w["in_flight"] for w in readyz(server)["models"]["patient"]["workers"])


def wait_for_disconnect(fake: FakeUpstream, before: int, since: float) -> float:
    until(lambda: len(fake.disconnects) > before, what="the upstream seeing its connection close")
    return fake.disconnects[-1] - since


def test_client_leaving_a_stream_while_waiting_closes_the_upstream(
    patient: tuple[FakeUpstream, RunningServer],
) -> None:
    fake, server = patient
    before = len(fake.disconnects)
    body = {"model": "patient", "messages": MESSAGES, "stream": True, "x_first_delay_ms": 5000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=0.5)
    left = time.monotonic()
    # Closed when the client left, not when the upstream's 5 s first delay ended.
    assert wait_for_disconnect(fake, before, left) < 4.0
    until(lambda: in_flight(server) == 0, what="no request in flight")


def test_client_leaving_a_plain_call_while_waiting_lets_it_finish(
    patient: tuple[FakeUpstream, RunningServer],
) -> None:
    """A plain call a model took runs to its end (it is charged what the model produced)
    and then gives its slot back; the upstream is not cut off."""
    fake, server = patient
    before, answered = len(fake.disconnects), len(fake.requests)
    body = {"model": "patient", "messages": MESSAGES, "x_first_delay_ms": 2000}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=0.5)
    assert len(fake.requests) > answered
    until(lambda: in_flight(server) == 0, what="no request in flight")
    assert len(fake.disconnects) == before
    left = until(lambda: server.events("request", status=499), what="its access line")
    assert left[-1]["served_by"] == "patient"


def test_client_leaving_mid_stream_closes_the_upstream(
    patient: tuple[FakeUpstream, RunningServer],
) -> None:
    fake, server = patient
    before = len(fake.disconnects)
    body = {
        "model": "patient",
        "messages": MESSAGES,
        "stream": True,
        "x_chunks": 50,
        "x_chunk_delay_ms": 300,
    }
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=10
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                break
    left = time.monotonic()
    # Closed when the client left, not when the upstream's 50 chunks (15 s) ended.
    assert wait_for_disconnect(fake, before, left) < 10.0
    until(lambda: in_flight(server) == 0, what="no request in flight")


@pytest.fixture(scope="module")
def limited(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("m", ["a", "b", "c"]),
            auth={
                "window_s": 2,
                "api_keys": [
                    {"name": "rpm", "key": "k-rpm", "rpm": 5},
                    {"name": "tpm", "key": "k-tpm", "tpm": 10},
                    {"name": "tpm-stream", "key": "k-tpm-stream", "tpm": 10},
                ],
            },
        )
    )


def post(server: RunningServer, key: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_rpm_limit_is_exact_then_recovers(limited: RunningServer) -> None:
    statuses = [post(limited, "k-rpm") for _ in range(8)]
    assert [r.status_code for r in statuses] == [200] * 5 + [429] * 3
    ok, refused = statuses[0], statuses[5]
    assert ok.headers["x-ratelimit-limit-requests"] == "5"
    assert ok.headers["x-ratelimit-remaining-requests"] == "4"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    wait = float(refused.headers["retry-after-ms"]) / 1000
    assert 0 < wait <= 2.0
    assert int(refused.headers["retry-after"]) >= 1
    time.sleep(wait + 0.05)  # deliberate: what is tested is the window passing
    assert post(limited, "k-rpm").status_code == 200


def test_tpm_limit_counts_usage_then_recovers(limited: RunningServer) -> None:
    # Each reply uses 1 prompt token + 3 completion tokens = 4 tokens.
    codes = [post(limited, "k-tpm").status_code for _ in range(3)]
    assert codes == [200, 200, 200]  # 12 tokens used: over 10 only after the third
    refused = post(limited, "k-tpm")
    assert refused.status_code == 429
    assert "tokens" in refused.json()["error"]["message"]
    wait = float(refused.headers["retry-after-ms"]) / 1000
    time.sleep(wait + 0.05)  # deliberate: what is tested is the window passing
    assert post(limited, "k-tpm").status_code == 200


def test_tpm_counts_streams_without_showing_the_usage_chunk(limited: RunningServer) -> None:
    response = post(limited, "k-tpm-stream", stream=True)
    payloads = sse_payloads(response.text)
    assert all(p == "[DONE]" or p["choices"] for p in payloads), "usage chunk leaked"
    assert all(p == "[DONE]" or "usage" not in p for p in payloads)
    codes = [post(limited, "k-tpm-stream").status_code for _ in range(3)]
    assert codes == [200, 200, 429]  # 4 (stream) + 4 + 4 = 12 > 10
