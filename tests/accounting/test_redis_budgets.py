"""Budgets and limits shared through Redis: two replicas, and a three-node Redis Cluster.

Scripted model ``m`` answers ``["a", "b"]`` to "hi": 1 prompt + 2 completion tokens, 3
units at one unit a token. A budget of 8 admits three requests and refuses the fourth,
whichever replica each lands on.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from appliance.accounting.redis_limits import RedisLimiter, hash_tag
from appliance.config.auth import BudgetConfig
from appliance.errors import QuotaExceededError, RateLimitError
from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer

PRICE = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


def ask(server: RunningServer, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def test_two_replicas_enforce_one_budget(
    redis: RedisServer, start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    config = cluster_config(
        scripted("m", ["a", "b"], pricing=PRICE),
        auth={"api_keys": [{"name": "team", "key": "k-team", "budget": {"amount": 8}}]},
        state={"redis_url": redis.url, "usage_path": str(tmp_path / "usage.sqlite")},
        server={"admin_key": "k-admin"},
    )
    a, b = start_server(config), start_server(config)
    replies = [ask(server, "k-team") for server in (a, b, a, b, a)]
    assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]
    assert {r.json()["error"]["code"] for r in replies[3:]} == {"insufficient_quota"}
    # Spend names keys: only the admin sees it.
    assert httpx.get(f"{b.base_url}/status.json").status_code == 401
    admin = {"Authorization": "Bearer k-admin"}
    status = httpx.get(f"{b.base_url}/status.json", headers=admin).json()
    assert status["budgets"] == [
        {"key": "team", "spent": 9.0, "amount": 8.0, "period": "month", "currency": "USD"}
    ]


class RedisCluster:
    """Three ``redis-server --cluster-enabled yes`` nodes joined by ``redis-cli --cluster``."""

    def __init__(self, *, full_coverage: bool = True) -> None:
        self.full_coverage = full_coverage
        if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
            message = "redis-server and redis-cli are not installed (make test installs them)"
            if os.environ.get("CI"):
                pytest.fail(message)
            pytest.skip(message)
        self.folder = tempfile.mkdtemp(prefix="redis-cluster-")
        self.ports = [_node_port() for _ in range(3)]
        self.processes = [self._node(port) for port in self.ports]
        for port in self.ports:
            self._wait(["-p", str(port), "ping"], "PONG")
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *nodes, "--cluster-replicas", "0"],
            input="yes\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        for port in self.ports:
            self._wait(["-p", str(port), "cluster", "info"], "cluster_state:ok")

    def _node(self, port: int) -> subprocess.Popen[bytes]:
        folder = Path(self.folder, str(port))
        folder.mkdir()
        return subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-require-full-coverage",
                "yes" if self.full_coverage else "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def _wait(command: list[str], expected: str) -> None:
        until(
            lambda: (
                expected
                in subprocess.run(["redis-cli", *command], capture_output=True, text=True).stdout
            ),
            what=f"redis cluster: {expected!r} from {command}",
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def slot_owner(self, key: str) -> int:
        """The port of the node that holds ``key`` (the others answer MOVED)."""
        for port in self.ports:
            done = subprocess.run(
                ["redis-cli", "-p", str(port), "exists", key], capture_output=True, text=True
            )
            if "MOVED" not in done.stdout + done.stderr:
                return port
        raise LookupError(key)

    def flush_scripts(self) -> None:
        for port in self.ports:
            self._wait(["-p", str(port), "script", "flush"], "OK")

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _node_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and valid too."""
    while True:
        port = random.randint(20000, 30000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    yield cluster
    cluster.close()


def test_redis_cluster_holds_rpm_tpm_and_budget(redis_cluster: RedisCluster) -> None:
    names = [f"team-{i}" for i in range(8)]
    owners = {redis_cluster.slot_owner(f"{{{hash_tag(n)}}}") for n in names}
    assert len(owners) > 1, "the keys are spread over several nodes"

    async def run() -> None:
        limiter = RedisLimiter(
            redis_cluster.url, window_s=60, cluster=True, prefix="t", timeout_s=2
        )  # 100 admissions at once on a busy 2-core machine: more than the default 0.25 s
        try:
            # Connections to every node first (as a replica has after its first requests):
            # the burst below measures the limit, not connection set-up.
            await asyncio.gather(*(limiter.admit(f"warm-{name}", None, None) for name in names))
            # Nodes restarted under a running replica forget its scripts: the burst below
            # meets NOSCRIPT on every node at once and must still be counted exactly.
            redis_cluster.flush_scripts()
            for name in names:
                results = await asyncio.gather(
                    *(_outcome(limiter.admit(name, 60, None)) for _ in range(100))
                )
                assert collections.Counter(results) == {"ok": 60, "rate_limit_exceeded": 40}
            await limiter.admit("tokens", None, 10)
            await limiter.spend("tokens", 10)
            with pytest.raises(RateLimitError, match="10 tokens per minute"):
                await limiter.admit("tokens", None, 10)
            budget = BudgetConfig(amount=1.0, period="week")
            await limiter.admit("spender", None, None, budget)
            await limiter.spend("spender", 0, 1.0)
            with pytest.raises(QuotaExceededError):
                await limiter.admit("spender", None, None, budget)
            assert await limiter.spent({"spender": budget}) == {"spender": 1.0}
            assert limiter.failures == 0
        finally:
            await limiter.close()

    asyncio.run(run())


async def _outcome(admission: object) -> str:
    try:
        await admission  # type: ignore[misc]
    except RateLimitError as exc:
        return exc.code or ""
    return "ok"


def test_one_cluster_node_down_fails_only_its_own_keys() -> None:
    """A primary down (before its replica takes over, or for good in a cluster that serves
    partial coverage): keys on the other nodes are still counted, after a restart of
    theirs made them forget the scripts too."""
    cluster = RedisCluster(full_coverage=False)
    try:
        down_port = cluster.ports[2]
        names = [f"team-{i}" for i in range(12)]
        owner = {n: cluster.slot_owner(f"{{{hash_tag(n)}}}") for n in names}
        healthy = [n for n in names if owner[n] != down_port]
        lost = [n for n in names if owner[n] == down_port]
        assert healthy and lost

        async def run() -> None:
            limiter = RedisLimiter(cluster.url, window_s=60, cluster=True, prefix="d", timeout_s=1)
            try:
                await limiter.admit("warm", None, None)  # learns the slot map
                cluster.flush_scripts()
                cluster.processes[2].terminate()
                cluster.processes[2].wait(10)
                for name in healthy:
                    await limiter.admit(name, 2, None)
                    await limiter.admit(name, 2, None)
                    with pytest.raises(RateLimitError):
                        await limiter.admit(name, 2, None)
                assert limiter.failures == 0
                await limiter.admit(lost[0], 2, None)  # fails open: the default policy
                assert limiter.failures == 1
            finally:
                await limiter.close()

        asyncio.run(run())
    finally:
        cluster.close()
