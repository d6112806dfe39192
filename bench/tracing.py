"""What tracing costs: CPU per request with tracing off, on, and with its collector down.

``python bench/tracing.py`` drives the app in-process with raw ASGI calls, as
``bench/edge.py`` does (same config, same plain and streamed chat requests), in three
modes, each in a fresh process:

- ``off``: no ``telemetry:`` section (the default);
- ``on``: spans exported to a collector that takes them (a minimal OTLP/HTTP sink in
  another process, so its CPU is not counted here);
- ``down``: spans exported to a closed port (every export fails; spans are dropped and
  counted).

CPU is the whole process's (``time.process_time``): the exporting thread's work counts.
It alternates the modes ``--rounds`` times and prints each mode's median and its ratio to
``off``. It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge import BODY, CONFIG, STREAM, _one  # noqa: E402

MODES = ("off", "on", "down")


async def measure(requests: int, endpoint: str | None) -> dict[str, float]:
    """CPU microseconds per plain and per streamed request, in this process."""
    import logging

    import structlog

    from appliance.config import ApplianceConfig
    from appliance.http.app import create_app
    from appliance.serving.cluster import Cluster

    logging.disable(logging.CRITICAL)
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    config = ApplianceConfig.model_validate(
        {**CONFIG, **({"telemetry": {"otlp_endpoint": endpoint}} if endpoint else {})}
    )
    cluster = Cluster.from_config(config)
    await cluster.start()
    app = create_app(config, cluster=cluster)
    if app.tracing is not None:
        await app.tracing.start()  # the lifespan's job in a server
    out = {}
    try:
        for name, body in (("plain", BODY), ("stream", STREAM)):
            for _ in range(50):  # warm
                await _one(app, body)
            started = time.process_time()
            for _ in range(requests):
                status = await _one(app, body)
                assert status == 200, status
            if app.tracing is not None:
                await asyncio.to_thread(app.tracing.batch.force_flush, 10_000)
            out[name] = (time.process_time() - started) / requests * 1e6
    finally:
        if app.tracing is not None:
            await app.tracing.close()
        await cluster.close()
    return out


def sink(port: int) -> None:
    """A collector that takes every export and does nothing with it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(requests: int, rounds: int) -> None:
    up, closed = free_port(), free_port()
    collector = subprocess.Popen([sys.executable, __file__, "--sink", str(up)])
    endpoints = {"off": None, "on": f"http://127.0.0.1:{up}", "down": f"http://127.0.0.1:{closed}"}
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    try:
        for _ in range(rounds):
            for mode in MODES:
                command = [sys.executable, __file__, "--requests", str(requests), "--json"]
                endpoint = endpoints[mode]
                if endpoint is not None:
                    command += ["--endpoint", endpoint]
                done = subprocess.run(
                    command, env=os.environ, capture_output=True, text=True, check=True
                )
                runs[mode].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        collector.terminate()
        collector.wait()
    print(f"CPU microseconds per request, {requests} requests a run, {rounds} runs each")
    print(f"{'':8}" + "".join(f"{mode + ' (median)':>16}" for mode in MODES) + "   on/off  down/off")
    for kind in ("plain", "stream"):
        medians = {mode: statistics.median(r[kind] for r in runs[mode]) for mode in MODES}
        line = "".join(f"{medians[mode]:>16.1f}" for mode in MODES)
        on, down = medians["on"] / medians["off"], medians["down"] / medians["off"]
        print(f"{kind:8}{line}   {on:6.2f}  {down:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    if not args.json:
        run(args.requests, args.rounds)
        return
    print(json.dumps(asyncio.run(measure(args.requests, args.endpoint))))


if __name__ == "__main__":
    main()
