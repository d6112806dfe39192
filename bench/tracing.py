"""What tracing costs: CPU per request with tracing off, on, and with its collector down.

``python bench/tracing.py`` drives the app in-process with raw ASGI calls, as
``bench/edge.py`` does (same config, same plain and streamed chat requests), through four
apps built side by side in one process:

- ``off``: no ``telemetry:`` section (the default);
- ``on``: every trace recorded and exported to a collector that takes them (a minimal
  OTLP/HTTP sink in another process, so its CPU is not counted, that keeps connections
  open as a collector does);
- ``on-10%``: the same with ``sample_ratio: 0.1``;
- ``down``: every trace recorded and exported to a closed port (each export fails; the
  spans are dropped and counted).

The apps take turns, 50 requests at a time, so that a machine whose load drifts (other
work on it) weighs on each alike; they log as a server does (JSON access lines, rendered
and then thrown away). A request's CPU is the serving thread's while it runs
(``time.thread_time``) plus, for the traced apps, their exporting thread's whole CPU
(encoding and sending the spans) shared out over their requests. It prints each mode's
CPU per request and its ratio to ``off``, medians of ``--runs`` runs. It is a benchmark:
it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edge import BODY, CONFIG, STREAM, _one

MODES = ("off", "on", "on-10%", "down")
TURN = 50


async def measure(requests: int, collector: str, closed: str) -> dict[str, dict[str, float]]:
    """CPU microseconds per plain and per streamed request, per mode."""
    import logging

    import orjson
    import structlog

    from appliance.config import ApplianceConfig
    from appliance.http.app import create_app
    from appliance.runtime.logging import processors
    from appliance.runtime.redaction import Redactor
    from appliance.serving.cluster import Cluster

    logging.disable(logging.CRITICAL)
    # The server's own chain (JSON lines, secrets redacted), returned instead of written:
    # the access line, with its trace_id and span_id when traced, costs what it costs there.
    secrets = ApplianceConfig.model_validate(CONFIG).secrets()
    structlog.configure(
        processors=[
            *processors(Redactor(secrets)),
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.ReturnLoggerFactory(),
    )
    telemetry: dict[str, dict[str, Any] | None] = {
        "off": None,
        "on": {"otlp_endpoint": collector},
        "on-10%": {"otlp_endpoint": collector, "sample_ratio": 0.1},
        "down": {"otlp_endpoint": closed},
    }
    apps, clusters = {}, []
    for mode in MODES:
        section = telemetry[mode]
        config = ApplianceConfig.model_validate(
            {**CONFIG, **({"telemetry": section} if section else {})}
        )
        cluster = Cluster.from_config(config)
        await cluster.start()
        clusters.append(cluster)
        apps[mode] = app = create_app(config, cluster=cluster)
        if app.tracing is not None:
            await app.tracing.start()  # the lifespan's job in a server
    out: dict[str, dict[str, float]] = {mode: {} for mode in MODES}
    try:
        for kind, body in (("plain", BODY), ("stream", STREAM)):
            for app in apps.values():
                for _ in range(TURN):  # warm
                    await _one(app, body)
            spent = dict.fromkeys(MODES, 0.0)
            exporting = {mode: _thread_cpu(app) for mode, app in apps.items()}
            for _ in range(requests // TURN):
                for mode, app in apps.items():
                    started = time.thread_time()
                    for _ in range(TURN):
                        status = await _one(app, body)
                        assert status == 200, status
                    spent[mode] += time.thread_time() - started
            for mode, app in apps.items():
                if app.tracing is not None:
                    await asyncio.to_thread(app.tracing.batch.force_flush, 10_000)
                spent[mode] += _thread_cpu(app) - exporting[mode]
                out[mode][kind] = spent[mode] / requests * 1e6
    finally:
        for app in apps.values():
            if app.tracing is not None:
                await app.tracing.close()
        for cluster in clusters:
            await cluster.close()
    return out


def _thread_cpu(app: Any) -> float:
    """The CPU seconds the app's exporting thread has used (0 without tracing)."""
    thread = app.tracing.batch._thread if app.tracing is not None else None
    if thread is None or thread.ident is None:
        return 0.0
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def sink(port: int) -> None:
    """A collector that takes every export and does nothing with it."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # connections kept open, as a collector keeps them

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3, help="figures are their medians")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
        return
    up, closed = free_port(), free_port()
    collector = subprocess.Popen([sys.executable, __file__, "--sink", str(up)])
    runs = []
    try:
        for _ in range(args.runs):
            runs.append(
                asyncio.run(
                    measure(args.requests, f"http://127.0.0.1:{up}", f"http://127.0.0.1:{closed}")
                )
            )
    finally:
        collector.terminate()
        collector.wait()
    print(
        f"CPU microseconds per request, {args.requests} requests per mode in turns of {TURN}, "
        f"medians of {args.runs} runs (ratio: the median of each run's ratio to off)"
    )
    print(f"{'':8}" + "".join(f"{mode:>10}" for mode in MODES))
    for kind in ("plain", "stream"):
        cpu = [statistics.median(run[m][kind] for run in runs) for m in MODES]
        ratio = [statistics.median(run[m][kind] / run["off"][kind] for run in runs) for m in MODES]
        print(f"{kind:8}" + "".join(f"{value:>10.1f}" for value in cpu))
        print(f"{'  ratio':8}" + "".join(f"{value:>10.2f}" for value in ratio))


if __name__ == "__main__":
    main()
