"""What tracing costs in the real server: CPU per request with tracing off, on, and down.

``python bench/tracing_servers.py`` starts three appliances as ``bench/run.py`` does (Granian,
an ``openai`` model in front of the bench's fast upstream, JSON access log on): tracing off,
on (every trace recorded and exported to ``bench/tracing.py``'s sink in another process)
and down (exporting to a closed port). The three take turns, in alternating order, each
turn 1,500 plain requests and 300 16-chunk streams at 16 concurrent; a request's CPU is the
server's process tree's (/proc), exporting thread included. It prints the medians per mode,
and the median of each round's ratio to ``off``. It is a benchmark: it prints figures and
fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run

PLAIN, STREAMS, CONCURRENCY = 1500, 300, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--python", default=sys.executable, help="the appliance's interpreter")
    args = parser.parse_args()
    sink_port, closed = run.free_port(), run.free_port()
    sink = subprocess.Popen(
        [sys.executable, str(run.HERE / "tracing.py"), "--sink", str(sink_port)]
    )
    up_port = run.free_port()
    upstream = run.Proc([sys.executable, str(run.HERE / "upstream.py"), str(up_port)])
    up_base = f"http://127.0.0.1:{up_port}/v1"
    modes = {
        "off": "",
        "on": f'telemetry: {{otlp_endpoint: "http://127.0.0.1:{sink_port}"}}',
        "down": f'telemetry: {{otlp_endpoint: "http://127.0.0.1:{closed}"}}',
    }
    cpu: dict[str, dict[str, list[float]]] = {m: {"plain": [], "stream": []} for m in modes}
    procs: list[run.Proc] = []
    try:
        run.wait_http(f"{up_base}/models")
        with tempfile.TemporaryDirectory() as tmp:
            servers = {}
            for mode, variant in modes.items():
                proc, base, _ = run.start_appliance(
                    up_base, Path(tmp), args.python, variant=variant
                )
                procs.append(proc)
                servers[mode] = (proc, base)
                asyncio.run(run.plain(base, CONCURRENCY, 300))  # warm
                asyncio.run(run.streams(base, CONCURRENCY, 50))
            order = list(servers)
            for round_ in range(args.rounds):
                for mode in order if round_ % 2 == 0 else order[::-1]:
                    proc, base = servers[mode]
                    started = run.cpu_seconds(proc.pid)
                    asyncio.run(run.plain(base, CONCURRENCY, PLAIN))
                    plain = run.cpu_seconds(proc.pid)
                    asyncio.run(run.streams(base, CONCURRENCY, STREAMS))
                    cpu[mode]["plain"].append((plain - started) / PLAIN * 1e3)
                    cpu[mode]["stream"].append((run.cpu_seconds(proc.pid) - plain) / STREAMS * 1e3)
    finally:
        for proc in procs:
            proc.stop()
        upstream.stop()
        sink.terminate()
        sink.wait()
    print(f"server CPU per request (ms), medians of {args.rounds} alternated rounds")
    for kind in ("plain", "stream"):
        base_cpu = cpu["off"][kind]
        cells = []
        for mode in modes:
            ratios = [a / b for a, b in zip(cpu[mode][kind], base_cpu, strict=True)]
            median = statistics.median(cpu[mode][kind])
            cells.append(f"{mode} {median:.3f} ({statistics.median(ratios):.2f}x)")
        print(f"{kind:8}" + "   ".join(cells))


if __name__ == "__main__":
    main()
