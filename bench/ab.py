"""Two checkouts of the appliance side by side: ``python bench/ab.py OLD NEW``.

Starts ``bench/upstream.py`` and one appliance from each tree (``OLD`` and ``NEW`` first on
``PYTHONPATH``, the benchmark's config: one key, an ``openai`` model, the access log on),
then measures them in short alternating blocks (plain requests at c16, 16-chunk streams
at c8, plain requests one at a time), the order flipping every round, and prints the
server CPU per request of each (for the last, the median latency) and the median of the
round-by-round ratios new/old. On a shared machine whose speed
drifts, blocks this short side by side show a change that whole ``bench/run.py`` runs, one
after the other, cannot. It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import KEY, Proc, cpu_seconds, free_port, merged, plain, streams, wait_http

HERE = Path(__file__).resolve().parent


def start(
    tree: str, upstream: str, folder: Path, python: str, variant: str = ""
) -> tuple[Proc, str]:
    port = free_port()
    config = folder / f"ab-{port}.yaml"
    settings = {
        "logging": {"level": "info", "format": "json"},
        "auth": {"api_keys": [{"name": "bench", "key": KEY}]},
        "models": [
            {"name": "bench", "backend": "openai", "options": {"base_url": upstream}},
        ],
    }
    config.write_text(yaml.safe_dump(merged(settings, yaml.safe_load(variant) or {})))
    argv = [python, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)]
    proc = Proc(argv, env={"PYTHONPATH": tree, "APPLIANCE_LOG_LEVEL": "info"})
    wait_http(f"http://127.0.0.1:{port}/readyz")
    return proc, f"http://127.0.0.1:{port}/v1"


async def block(proc: Proc, base: str, kind: str, count: int) -> float:
    """Server CPU milliseconds per request over one block; for ``c1``, the median
    latency in milliseconds of plain requests sent one at a time."""
    before = cpu_seconds(proc.pid)
    if kind == "plain":
        await plain(base, 16, count)
    elif kind == "c1":
        latencies, _ = await plain(base, 1, count)
        return statistics.median(latencies) * 1000
    else:
        await streams(base, 8, count)
    return (cpu_seconds(proc.pid) - before) * 1000 / count


async def measure(servers: dict[str, tuple[Proc, str]], rounds: int, count: int) -> None:
    for proc, base in servers.values():  # warm-up
        await block(proc, base, "plain", 300)
        await block(proc, base, "stream", 100)
    names = list(servers)
    for kind, n in (("plain", count), ("stream", count // 3), ("c1", count // 2)):
        figures: dict[str, list[float]] = {name: [] for name in names}
        for i in range(rounds):
            for name in names if i % 2 == 0 else names[::-1]:
                proc, base = servers[name]
                figures[name].append(await block(proc, base, kind, n))
        old, new = figures[names[0]], figures[names[1]]
        ratios = [b / a for a, b in zip(old, new, strict=True)]
        what = "p50 latency ms at c1" if kind == "c1" else "CPU ms per request"
        print(
            f"{kind:6} {what}: old {statistics.median(old):.3f}, "
            f"new {statistics.median(new):.3f}, new/old (median of rounds) "
            f"{statistics.median(ratios):.3f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--count", type=int, default=900, help="plain requests a block")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument(
        "--config", default="", help="YAML merged into both configs (a feature turned on)"
    )
    args = parser.parse_args()
    port = free_port()
    upstream = Proc([sys.executable, str(HERE / "upstream.py"), str(port)])
    servers: dict[str, tuple[Proc, str]] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        with tempfile.TemporaryDirectory() as folder:
            for name in (args.old, args.new):
                servers[name] = start(
                    name, f"http://127.0.0.1:{port}/v1", Path(folder), args.python, args.config
                )
            started = time.monotonic()
            asyncio.run(measure(servers, args.rounds, args.count))
            print(f"({time.monotonic() - started:.0f} s)")
    finally:
        for proc, _ in servers.values():
            proc.stop()
        upstream.stop()


if __name__ == "__main__":
    main()
