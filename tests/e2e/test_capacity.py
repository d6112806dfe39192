"""Capacity on the real server: proxies do not throttle upstreams; queues leak no slots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer

MESSAGES = [{"role": "user", "content": "hi"}]


def status(server: RunningServer, model: str) -> dict[str, Any]:
    models = httpx.get(f"{server.base_url}/status.json", timeout=5).json()["models"]
    [entry] = [m for m in models if m["name"] == model]
    return entry  # type: ignore[no-any-return]


async def timed_stream(client: httpx.AsyncClient, body: dict[str, Any]) -> float:
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=body)
    payloads = sse_payloads(response.text)
    assert response.status_code == 200 and payloads[-1] == "[DONE]", response.text[-300:]
    assert not any(isinstance(p, dict) and "error" in p for p in payloads)
    return time.monotonic() - started


def test_a_default_openai_model_does_not_throttle_its_upstream(
    upstream: FakeUpstream, start_server: Callable[..., RunningServer]
) -> None:
    server = start_server(
        cluster_config(
            {
                "name": "up",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "ok"},
            }
        )
    )
    # Ten chunks 200 ms apart: a 2 s stream, long enough for all 32 to overlap even when
    # a busy machine starts them slowly.
    body = {
        "model": "up",
        "messages": MESSAGES,
        "stream": True,
        "x_chunks": 10,
        "x_chunk_delay_ms": 200,
    }

    async def run() -> tuple[int, int]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
            await timed_stream(client, body)  # warm the connections
            most = {"in_flight": 0, "queued": 0}

            async def watch() -> None:
                while True:
                    entry = (await client.get("/status.json")).json()["models"]
                    [up] = [m for m in entry if m["name"] == "up"]
                    for field in most:
                        most[field] = max(most[field], up[field])
                    await asyncio.sleep(0.02)  # the watcher's pacing, not a wait

            watcher = asyncio.create_task(watch())
            await asyncio.gather(*(timed_stream(client, body) for _ in range(32)))
            watcher.cancel()
            return most["in_flight"], most["queued"]

    most_in_flight, most_queued = asyncio.run(run())
    # Capped at 4 per worker, 28 of the 32 streams would wait in the queue.
    assert most_queued == 0
    assert most_in_flight > 8, most_in_flight
    assert status(server, "up")["in_flight"] == 0


def test_queue_timeouts_racing_releases_leave_no_slot_taken(
    start_server: Callable[..., RunningServer],
) -> None:
    # One slot held for 0.2 s at a time and a 0.2 s queue timeout: waiters time out just
    # as slots are handed over to them.
    server = start_server(
        cluster_config(
            scripted(
                "narrow",
                ["a", "b"],
                max_concurrency=1,
                queue_size=64,
                queue_timeout_s=0.2,
                retries=0,
                options={"delay_ms": 100},
            )
        )
    )
    body = {"model": "narrow", "messages": MESSAGES}

    async def burst() -> list[int]:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            replies = await asyncio.gather(
                *(client.post("/v1/chat/completions", json=body) for _ in range(24))
            )
            return [r.status_code for r in replies]

    codes = asyncio.run(burst())
    assert 200 in codes and 503 in codes, codes
    assert set(codes) <= {200, 503}, codes
    entry = status(server, "narrow")
    assert (entry["in_flight"], entry["queued"]) == (0, 0)
    workers = httpx.get(f"{server.base_url}/readyz").json()["models"]["narrow"]["workers"]
    assert [w["in_flight"] for w in workers] == [0]
    # A leaked slot would keep this one queued until its 0.2 s queue timeout: a 503.
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body).status_code == 200
