"""The appliance's benchmark: ``make bench`` (or ``python bench/run.py``).

It starts a fast fake upstream, the appliance in front of it (one Granian process, the
production defaults: JSON access log on), and drives both from this process with an
aiohttp load generator; every figure is measured direct, through the floor (``floor.py``:
the same server stack relaying bytes and nothing else) and through the appliance in the
same run, interleaved, and printed side by side. CPU is the measured server's process
tree (/proc), so the load generator and the upstream sharing the machine do not count
against it. Medians of ``--repeat`` runs. It is a benchmark: it prints figures and fails on nothing.
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
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import targets

HERE = Path(__file__).resolve().parent
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CHAT = {"model": "bench", "messages": [{"role": "user", "content": "Say hello."}]}
KEY = "bench-key"  # auth on, as a user runs it; the direct upstream ignores the header
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it (Granian's workers, local model workers); the
    tests use it too."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
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


def start_appliance(
    upstream: str, folder: Path, python: str, processes: int = 1, variant: str = ""
) -> tuple[Proc, str, float]:
    """The appliance in front of ``upstream`` (the bench's config, with ``variant``'s YAML
    merged into it), and the seconds it took from its command to its first 200."""
    port = free_port()
    config = folder / f"bench-{port}.yaml"
    settings: dict[str, Any] = {
        "server": {"processes": processes},
        "logging": {"level": "info", "format": "json"},
        "auth": {"api_keys": [{"name": "bench", "key": KEY}]},
        "models": [
            {
                "name": "bench",
                "backend": "openai",
                "options": {"base_url": upstream, "model": "bench"},
            }
        ],
    }
    config.write_text(yaml.safe_dump(merged(settings, yaml.safe_load(variant) or {})))
    started = time.monotonic()
    proc = Proc(
        [python, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)],
        env={"APPLIANCE_LOG_LEVEL": "info"},
    )
    base = f"http://127.0.0.1:{port}/v1"
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc, base, time.monotonic() - started


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mapping by mapping."""
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


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
            async with session.post(f"{base}/chat/completions", data=payload, headers=HEADERS) as r:
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
        async with session.post(f"{base}/chat/completions", data=payload, headers=HEADERS) as r:
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
    lat, elapsed = asyncio.run(plain(base, 64, args.requests))
    out["rps_c64"] = len(lat) / elapsed

    ttfb = asyncio.run(streams(base, 1, args.streams // 4))
    out["ttfb_stream_ms"] = statistics.median(ttfb) * 1000
    before = cpu()
    ttfb = asyncio.run(streams(base, 8, args.streams))
    out["cpu_ms_per_stream"] = (cpu() - before) * 1000 / len(ttfb)
    return out


async def open_loop(base: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Plain requests at a fixed offered ``rate``; latencies from each scheduled start.

    Timing from the schedule, not from the send, keeps a slow server from hiding its
    queueing (no coordinated omission). Requests that fail or take over 10 s are counted
    as dropped.
    """
    payload = orjson.dumps(CHAT)
    count = int(rate * seconds)
    latencies: list[float] = []
    dropped = 0
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter() + 0.05

        async def one(i: int) -> None:
            nonlocal dropped
            scheduled = start + i / rate
            await asyncio.sleep(max(scheduled - time.perf_counter(), 0))
            try:
                async with session.post(
                    f"{base}/chat/completions", data=payload, headers=HEADERS
                ) as r:
                    await r.read()
                    ok = r.status == 200
            except (TimeoutError, aiohttp.ClientError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                dropped += 1

        await asyncio.gather(*(one(i) for i in range(count)))
    return latencies, dropped


def start_floor(upstream: str, python: str) -> tuple[Proc, str]:
    """bench/floor.py: the same stack relaying bytes and doing nothing else."""
    port = free_port()
    proc = Proc([python, str(HERE / "floor.py"), str(port), upstream])
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc, f"http://127.0.0.1:{port}/v1"


def start_litellm(litellm: str, upstream: str, folder: Path) -> tuple[Proc, str, float]:
    """LiteLLM's proxy in front of the same upstream: one worker, one key, its defaults."""
    port = free_port()
    config = folder / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: {upstream}\n"
        "      api_key: unused\n"
        f"general_settings: {{master_key: {KEY}}}\n"
    )
    started = time.monotonic()
    proc = Proc(
        [litellm, "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env={"LITELLM_LOG": "ERROR", "DISABLE_ADMIN_UI": "True", "NO_DOCS": "True"},
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120)
    return proc, f"http://127.0.0.1:{port}/v1", time.monotonic() - started


ROWS = [
    ("p50_c1_ms", "plain p50 latency, c1 (ms)"),
    ("p99_c1_ms", "plain p99 latency, c1 (ms)"),
    ("p50_c16_ms", "plain p50 latency, c16 (ms)"),
    ("p99_c16_ms", "plain p99 latency, c16 (ms)"),
    ("rps_c16", "plain requests/s, c16"),
    ("rps_c64", "plain requests/s, c64 (saturated)"),
    ("cpu_ms_per_req", "server CPU per plain request (ms)"),
    ("ttfb_stream_ms", "stream time to first chunk, c1 (ms)"),
    ("cpu_ms_per_stream", "server CPU per 16-chunk stream (ms)"),
]


RATES = (50, 100, 250, 500, 1000, 2000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--streams", type=int, default=800)
    parser.add_argument("--starts", type=int, default=5, help="start-ups timed")
    parser.add_argument("--open-streams", type=int, default=1000)
    parser.add_argument("--open-seconds", type=float, default=4.0, help="per offered rate")
    parser.add_argument("--no-processes", action="store_true", help="skip `processes: 2`")
    parser.add_argument("--no-open-loop", action="store_true", help="skip the open loop")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=YAML",
        help="also measure the appliance with this YAML merged into its config, as a column "
        "of its own (e.g. 'no access log=logging: {access_log: false}'); repeatable",
    )
    parser.add_argument("--litellm", help="the `litellm` command of a venv with litellm[proxy]")
    parser.add_argument("--chart", type=Path, help="write latency against offered load here")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="the interpreter of the appliance's install (make bench: a venv with only what "
        "`make run` installs, as a user has it; test tools change what loads at start)",
    )
    args = parser.parse_args()
    if args.chart:
        try:
            import matplotlib  # noqa: F401 - only to fail now, not after the whole run
        except ImportError:
            parser.error("--chart needs matplotlib (make bench installs it)")

    up_port = free_port()
    upstream = Proc([sys.executable, str(HERE / "upstream.py"), str(up_port)])
    up_base = f"http://127.0.0.1:{up_port}/v1"
    wait_http(f"{up_base}/models")
    runs: dict[str, list[dict[str, float]]] = {"direct": [], "floor": [], "appliance": []}
    loops: dict[str, dict[float, tuple[list[float], int]]] = {"direct": {}, "appliance": {}}
    extra: dict[str, dict[str, float]] = {"appliance": {}}
    procs: list[Proc] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            appliance, base, _ = start_appliance(up_base, Path(tmp), args.python)
            procs.append(appliance)
            time.sleep(0.5)
            extra["appliance"]["idle_rss"] = rss_mib(appliance.pid)
            floor, floor_base = start_floor(up_base, args.python)
            procs.append(floor)
            systems: dict[str, tuple[str, Proc | None]] = {
                "direct": (up_base, None),
                "floor": (floor_base, floor),
                "appliance": (base, appliance),
            }
            if not args.no_processes:
                two, two_base, _ = start_appliance(up_base, Path(tmp), args.python, processes=2)
                procs.append(two)
                systems["2 processes"] = (two_base, two)
                runs["2 processes"] = []
            for variant in args.variant:
                name, _, snippet = variant.partition("=")
                proc, url, _ = start_appliance(up_base, Path(tmp), args.python, variant=snippet)
                procs.append(proc)
                systems[name] = (url, proc)
                runs[name] = []
            if args.litellm:
                litellm, lbase, lstart = start_litellm(args.litellm, up_base, Path(tmp))
                procs.append(litellm)
                time.sleep(1.0)
                extra["litellm"] = {"idle_rss": rss_mib(litellm.pid), "startup": lstart}
                systems["litellm"] = (lbase, litellm)
                runs["litellm"] = []
            order = list(systems)
            for round_ in range(args.repeat):  # alternated: the machine's drift hits all
                for name in order if round_ % 2 == 0 else order[::-1]:
                    url, proc = systems[name]
                    runs[name].append(measure(url, proc, args))
            for proc in procs[1:]:
                proc.stop()
            if not args.no_open_loop:
                for rate in RATES:
                    loops["direct"][rate] = asyncio.run(open_loop(up_base, rate, args.open_seconds))
                    loops["appliance"][rate] = asyncio.run(open_loop(base, rate, args.open_seconds))
                extra["appliance"]["peak_rss"] = asyncio.run(
                    hold_streams(base, args.open_streams, 4.0, lambda: rss_mib(appliance.pid))
                )
            appliance.stop()
            walls, cpus = [], []
            for _ in range(args.starts):
                proc, _, seconds = start_appliance(up_base, Path(tmp), args.python)
                cpus.append(cpu_seconds(proc.pid))
                proc.stop()
                walls.append(seconds)
            extra["appliance"]["startup"] = statistics.median(walls)
            extra["appliance"]["startup_cpu"] = statistics.median(cpus)
    finally:
        for proc in procs:
            proc.stop()
        upstream.stop()
    report(runs, loops, extra, args)


def report(
    runs: dict[str, list[dict[str, float]]],
    loops: dict[str, dict[float, tuple[list[float], int]]],
    extra: dict[str, dict[str, float]],
    args: argparse.Namespace,
) -> None:
    """Print every figure side by side (medians), the targets, and draw the chart."""
    systems = list(runs)
    print(
        f"\nappliance benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, "
        f"medians of {args.repeat} alternated rounds, one key, access log on; "
        f"load average at the end {os.getloadavg()[0]:.1f}\n"
    )
    widths = [max(11, len(name)) for name in [*systems, "appl./floor"]]

    def row(label: str, cells: list[str]) -> str:
        joined = "".join(f" {c.strip():>{w}} |" for c, w in zip(cells, widths, strict=True))
        return f"| {label:<40} |{joined}"

    print(row("figure", [*systems, "appl./floor"]))
    print(f"|{'-' * 42}|" + "".join("-" * (w + 2) + "|" for w in widths))

    def med(system: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[system])

    for key, label in ROWS:
        cells = []
        for system in systems:
            if key.startswith("cpu") and system == "direct":
                cells.append(f"{'-':>11}")
            else:
                value = med(system, key)
                cells.append(f"{value:>11.0f}" if key.startswith("rps") else f"{value:>11.3f}")
        share = targets.ratio(runs, "appliance", "floor", key)
        cells.append(f"{share:.2f}x")
        print(row(label, cells))
    for key, label in (
        ("idle_rss", "idle RSS (MiB)"),
        ("startup", "start-up to first 200 (s)"),
        ("startup_cpu", "CPU to the first 200 (s)"),
    ):
        cells = [
            f"{extra[s][key]:>11.2f}" if key in extra.get(s, {}) else f"{'-':>11}" for s in systems
        ]
        print(row(label, [*cells, ""]))
    if "peak_rss" in extra["appliance"]:
        peak = extra["appliance"]["peak_rss"]
        print(f"| {f'RSS with {args.open_streams} open streams (MiB)':<40} | appliance {peak:.1f}")
    for system in ("floor", "appliance"):
        for key, label in (("p50_c1_ms", "p50"), ("p99_c1_ms", "p99")):
            print(
                f"added latency at c1 {label}, {system}: {targets.added(runs, system, key):.3f} ms"
            )
    for system in systems:
        if system in ("direct", "floor", "appliance", "litellm"):
            continue
        plain_ratio = targets.ratio(runs, system, "appliance", "cpu_ms_per_req")
        stream_ratio = targets.ratio(runs, system, "appliance", "cpu_ms_per_stream")
        print(
            f"{system}: CPU per plain request {plain_ratio:.2f}x the appliance's, "
            f"per stream {stream_ratio:.2f}x"
        )
    own = med("appliance", "cpu_ms_per_req") - med("floor", "cpu_ms_per_req")
    print(
        f"\nThe appliance's own CPU per plain request, above the floor (bench/floor.py, "
        f"Falcon + Granian + aiohttp relaying bytes): {own:.3f} ms."
    )
    if loops["appliance"]:
        print("\nopen loop: offered req/s -> p50 / p99 latency (ms), dropped")
    for system in (s for s in loops if loops.get(s)):
        cells = []
        for rate in RATES:
            lat, dropped = loops[system][rate]
            p50 = statistics.median(lat) * 1000 if lat else float("nan")
            p99 = pct(lat, 0.99) * 1000 if lat else float("nan")
            cells.append(
                f"{rate}: {p50:.2f} / {p99:.2f}" + (f", {dropped} dropped" if dropped else "")
            )
        print(f"  {system:>10}  " + " | ".join(cells))
    print("\ntargets (issue 30):")
    for target in targets.judge(runs, extra):
        print(target.line())
    if args.chart and loops["appliance"]:
        chart(loops, args.chart)


def chart(loops: dict[str, dict[float, tuple[list[float], int]]], path: Path) -> None:
    """Latency against offered load, p50 and p99, one line per system (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for system, by_rate in loops.items():
        rates = sorted(r for r, (lat, _) in by_rate.items() if lat)
        p50 = [statistics.median(by_rate[r][0]) * 1000 for r in rates]
        p99 = [pct(by_rate[r][0], 0.99) * 1000 for r in rates]
        (line,) = ax.plot(rates, p99, marker="o", label=f"{system} p99")
        ax.plot(
            rates, p50, marker=".", linestyle="--", color=line.get_color(), label=f"{system} p50"
        )
    ax.set_xlabel("offered load (requests/s, open loop)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(list(RATES), [str(rate) for rate in RATES])
    ax.minorticks_off()
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Plain chat requests through each system, same fake upstream")
    fig.tight_layout()
    fig.savefig(path)
    print(f"chart: {path}")


if __name__ == "__main__":
    main()
