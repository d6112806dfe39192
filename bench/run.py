"""The appliance's benchmark: ``make bench`` (or ``python bench/run.py``).

It starts a fast fake upstream, the appliance in front of it (one Granian process, the
production defaults: JSON access log on), and drives both from this process with an
aiohttp load generator; every figure is measured direct and through the appliance in the
same run and printed side by side. CPU is the appliance's process tree (/proc), so the
load generator and the upstream sharing the machine do not count against it. Medians of
``--repeat`` runs. It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo.extend(children.get(current, []))
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def rss_mib(pid: int) -> float:
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except OSError:
            continue
    return total * PAGE / 2**20


def wait_http(url: str, timeout: float = 30) -> float:
    """Seconds until ``url`` answers 200."""
    import urllib.request

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"{url} did not come up")


class Proc:
    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_appliance(upstream: str, folder: Path) -> tuple[Proc, str, float]:
    port = free_port()
    config = folder / "bench.yaml"
    config.write_text(
        "logging: {level: info, format: json}\n"
        "models:\n"
        "  - name: bench\n"
        "    backend: openai\n"
        f"    options: {{base_url: '{upstream}', model: bench}}\n"
    )
    started = time.monotonic()
    proc = Proc(
        [sys.executable, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)],
        env={"APPLIANCE_LOG_LEVEL": "info"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc, base, time.monotonic() - started


async def users(
    base: str, concurrency: int, count: int, payload: bytes, read: Callable[..., Any]
) -> list[float]:
    """``count`` requests from ``concurrency`` users; what ``read(response, start)`` returns."""
    results: list[float] = []
    remaining = count

    async def user(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            async with session.post(
                f"{base}/chat/completions",
                data=payload,
                headers={"content-type": "application/json"},
            ) as r:
                assert r.status == 200, r.status
                results.append(await read(r, start))

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(user(session) for _ in range(concurrency)))
    return results


async def plain(base: str, concurrency: int, count: int) -> tuple[list[float], float]:
    """Latencies of plain requests, and the wall time they took."""

    async def latency(response: aiohttp.ClientResponse, start: float) -> float:
        await response.read()
        return time.perf_counter() - start

    started = time.perf_counter()
    latencies = await users(base, concurrency, count, orjson.dumps(CHAT), latency)
    return latencies, time.perf_counter() - started


async def streams(base: str, concurrency: int, count: int, **extra: Any) -> list[float]:
    """Time to first chunk of each stream (read to the end)."""

    async def first_chunk(response: aiohttp.ClientResponse, start: float) -> float:
        first = None
        async for line in response.content:
            if first is None and line.startswith(b"data: {"):
                first = time.perf_counter() - start
        assert first is not None
        return first

    payload = orjson.dumps({**CHAT, "stream": True, **extra})
    return await users(base, concurrency, count, payload, first_chunk)


async def hold_streams(base: str, count: int, hold_s: float, sample: Callable[[], float]) -> float:
    """Open ``count`` streams that stay open ``hold_s``; the peak of ``sample()`` meanwhile."""
    payload = orjson.dumps(
        {**CHAT, "stream": True, "x_first_delay_ms": hold_s * 1000, "x_chunks": 2}
    )
    peak = 0.0
    opened = 0

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal opened
        async with session.post(
            f"{base}/chat/completions", data=payload, headers={"content-type": "application/json"}
        ) as r:
            opened += 1
            async for _ in r.content:
                pass

    connector = aiohttp.TCPConnector(limit=count + 10)
    timeout = aiohttp.ClientTimeout(total=hold_s * 4 + 60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = [asyncio.create_task(one(session)) for _ in range(count)]
        while not all(t.done() for t in tasks):
            if opened >= count * 0.99:
                peak = max(peak, sample())
            await asyncio.sleep(0.2)
        await asyncio.gather(*tasks)
    return peak


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(base: str, proc: Proc | None, args: argparse.Namespace) -> dict[str, float]:
    """One round of every figure against ``base``; CPU of ``proc``'s tree if given."""
    out: dict[str, float] = {}
    cpu = (lambda: cpu_seconds(proc.pid)) if proc else (lambda: 0.0)

    asyncio.run(plain(base, 4, 300))  # warm up connections and code paths
    lat, _ = asyncio.run(plain(base, 1, args.requests // 4))
    out["p50_c1_ms"] = statistics.median(lat) * 1000
    out["p99_c1_ms"] = pct(lat, 0.99) * 1000

    before = cpu()
    lat, elapsed = asyncio.run(plain(base, 16, args.requests))
    used = cpu() - before
    out["rps_c16"] = len(lat) / elapsed
    out["p50_c16_ms"] = statistics.median(lat) * 1000
    out["p99_c16_ms"] = pct(lat, 0.99) * 1000
    out["cpu_ms_per_req"] = used * 1000 / len(lat)

    ttfb = asyncio.run(streams(base, 1, args.streams // 4))
    out["ttfb_stream_ms"] = statistics.median(ttfb) * 1000
    before = cpu()
    ttfb = asyncio.run(streams(base, 8, args.streams))
    out["cpu_ms_per_stream"] = (cpu() - before) * 1000 / len(ttfb)
    return out


ROWS = [
    ("p50_c1_ms", "plain p50 latency, c1 (ms)"),
    ("p99_c1_ms", "plain p99 latency, c1 (ms)"),
    ("p50_c16_ms", "plain p50 latency, c16 (ms)"),
    ("p99_c16_ms", "plain p99 latency, c16 (ms)"),
    ("rps_c16", "plain requests/s, c16"),
    ("cpu_ms_per_req", "appliance CPU per plain request (ms)"),
    ("ttfb_stream_ms", "stream time to first chunk, c1 (ms)"),
    ("cpu_ms_per_stream", "appliance CPU per 16-chunk stream (ms)"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--open-streams", type=int, default=1000)
    args = parser.parse_args()

    up_port = free_port()
    upstream = Proc([sys.executable, str(HERE / "upstream.py"), str(up_port)])
    up_base = f"http://127.0.0.1:{up_port}/v1"
    wait_http(f"{up_base}/models")
    with tempfile.TemporaryDirectory() as tmp:
        appliance, base, startup = start_appliance(up_base, Path(tmp))
        try:
            time.sleep(0.5)
            idle = rss_mib(appliance.pid)
            direct_runs, through_runs = [], []
            for _ in range(args.repeat):
                direct_runs.append(measure(up_base, None, args))
                through_runs.append(measure(base, appliance, args))
            peak = asyncio.run(
                hold_streams(base, args.open_streams, 4.0, lambda: rss_mib(appliance.pid))
            )
        finally:
            appliance.stop()
        startups = [startup]
        for _ in range(2):
            proc, _, seconds = start_appliance(up_base, Path(tmp))
            proc.stop()
            startups.append(seconds)
    upstream.stop()

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(
        f"\nappliance benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"medians of {args.repeat} runs, one Granian process, JSON access log on\n"
    )
    print(f"| {'figure':<40} | {'direct':>10} | {'appliance':>10} | {'added / ratio':>14} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 12}|{'-' * 16}|")
    for key, label in ROWS:
        d, a = med(direct_runs, key), med(through_runs, key)
        if key.startswith("cpu"):
            print(f"| {label:<40} | {'-':>10} | {a:>10.3f} | {'':>14} |")
        elif key.startswith("rps"):
            print(f"| {label:<40} | {d:>10.0f} | {a:>10.0f} | {a / d:>13.2f}x |")
        else:
            print(f"| {label:<40} | {d:>10.3f} | {a:>10.3f} | {a - d:>+13.3f}  |")
    print(f"| {'idle RSS (MiB)':<40} | {'-':>10} | {idle:>10.1f} | {'':>14} |")
    print(
        f"| {f'RSS with {args.open_streams} open streams (MiB)':<40} | {'-':>10} | "
        f"{peak:>10.1f} | {'':>14} |"
    )
    print(
        f"| {'start-up to first 200 (s)':<40} | {'-':>10} | "
        f"{statistics.median(startups):>10.2f} | {'':>14} |"
    )


if __name__ == "__main__":
    main()
