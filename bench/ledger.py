"""What accounting costs: the ledger per request, and a Redis admission at any traffic.

``python bench/ledger.py`` prints two tables:

1. CPU per charged request through :class:`appliance.http.metering.Charging` (metrics,
   cost, key spend), the sink a finished request feeds, without a ledger and with the
   SQLite ledger (buffering on the event
   loop, batched writes in its thread, all of it counted: ``process_time`` covers every
   thread of the process).
2. The Redis admission script's cost per admission with 1,000, 100,000 and 1,000,000
   requests in a key's window (its buckets are filled directly, as that traffic would
   have left them): Redis's own time per call (``INFO commandstats``) and the round trip
   seen by the client, on a local ``redis-server`` started for the run.

It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from redis import Redis

from appliance.accounting.auth import Principal
from appliance.accounting.ledger import Ledger
from appliance.accounting.limits import LocalLimiter
from appliance.accounting.redis_limits import BUCKETS, RedisLimiter
from appliance.config import ApplianceConfig
from appliance.http.metering import Charging
from appliance.http.scope import RequestScope
from appliance.runtime.metrics import Metrics
from appliance.wire.usage import Usage

CONFIG = ApplianceConfig.model_validate(
    {
        "models": [
            {
                "name": "m",
                "backend": "scripted",
                "pricing": {"input_per_mtok": 0.5, "output_per_mtok": 1.5},
            }
        ]
    }
)
USAGE = Usage(120, 40, 160)


async def charge_cpu(requests: int, ledger_path: Path | None) -> float:
    """CPU microseconds per charged request, with or without the ledger."""
    metrics, limiter = Metrics(), LocalLimiter()
    ledger = Ledger(ledger_path, limiter.book) if ledger_path else None
    if ledger is not None:
        await ledger.start()
    charging = Charging(metrics, limiter, ledger)
    principal = Principal("team", None)
    cluster: Any = SimpleNamespace(config=CONFIG)
    started = time.process_time()
    for i in range(requests):
        scope = RequestScope(f"req-{i}", "POST", "/v1/chat/completions", cluster)
        scope.principal, scope.status, scope.timing.model = principal, 200, "m"
        scope.open_charge("m", {}).usage = USAGE  # as a plain reply's usage is read
        await charging(scope)
        if i % 64 == 0:
            await asyncio.sleep(0)  # let the flush task run, as a server's loop would
    if ledger is not None:
        await ledger.close()  # every row written: its cost is all counted
    return (time.process_time() - started) / requests * 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(folder: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--appendonly", "no", "--dir", folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            return process, port
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def fill(client: Redis, limiter: RedisLimiter, key: str, requests: int) -> None:
    """Leave ``key``'s buckets as ``requests`` requests spread over the window would."""
    now_ms = int(client.time()[0]) * 1000
    width = limiter.width_ms
    last = now_ms // width
    first = last - BUCKETS + 1
    per = requests // BUCKETS
    for name in limiter.keys_of(key)[:2]:
        fields: dict[str, int] = {str(b): per for b in range(first, last + 1)}
        fields.update({"t": per * BUCKETS, "f": first, "l": last})
        client.delete(name)
        client.hset(name, mapping=fields)  # type: ignore[arg-type]
        client.pexpire(name, limiter.window_ms * 2)


async def admission_cost(port: int, requests: int, calls: int) -> tuple[float, float]:
    """(Redis microseconds per admission, client round trip in microseconds)."""
    client = Redis(port=port)
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", window_s=60, timeout_s=5)
    key = f"busy-{requests}"
    fill(client, limiter, key, requests)
    rpm, tpm = requests * 2 + calls, 10**12  # admitted: the whole script runs
    await limiter.admit(f"warm-up-{requests}", None, None)  # scripts loaded
    client.config_resetstat()
    started = time.perf_counter()
    for _ in range(calls):
        await limiter.admit(key, rpm, tpm)
        await limiter.spend(key, 100)
    wall = (time.perf_counter() - started) / calls * 1e6
    stats = client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    per_call = float(evalsha.get("usec", 0)) / max(int(evalsha.get("calls", 1)), 1)
    count = int(client.hget(limiter.keys_of(key)[0], "t") or 0)
    # The window moves on during the run: its oldest buckets leave it, a hundredth each.
    assert count >= requests * 0.9, "the window held the traffic it was filled with"
    await limiter.close()
    return per_call, wall / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="charges per variant")
    parser.add_argument("--calls", type=int, default=2_000, help="admissions per size")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        without = asyncio.run(charge_cpu(args.requests, None))
        with_ledger = asyncio.run(charge_cpu(args.requests, Path(folder, "usage.sqlite")))
    print(f"Charging a request, CPU per request ({args.requests:,} requests)")
    print(f"  {'without ledger':>16}  {'with ledger':>12}  {'ledger adds':>11}")
    print(f"  {without:13.1f} us  {with_ledger:9.1f} us  {with_ledger - without:8.1f} us")

    if shutil.which("redis-server") is None:
        print("\nredis-server is not installed: no admission figures")
        return
    sizes = (1_000, 100_000, 1_000_000)
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_redis(folder)
        try:
            costs = [asyncio.run(admission_cost(port, n, args.calls)) for n in sizes]
        finally:
            process.terminate()
            process.wait(10)
    print(f"\nRedis admission and spend scripts (rpm, tpm, budget), {args.calls:,} each per size")
    print("  requests in the window  " + "".join(f"{n:>12,}" for n in sizes))
    print("  in Redis, us per script " + "".join(f"{c[0]:>12.1f}" for c in costs))
    print("  round trip, us          " + "".join(f"{c[1]:>12.1f}" for c in costs))


if __name__ == "__main__":
    main()
