"""Where one request's CPU goes: ``python bench/stages.py`` (the table in docs/profile.md).

Serves the benchmark's config (``bench/run.py``: one key, an ``openai`` model in front of
the fake upstream, the access log on) under cProfile, sends ``--requests`` plain chat
requests and ``--streams`` 16-chunk streams (one at a time, after a warm-up), and prints
the profile's own time (``tottime``) per stage of the request, per plain request and per
stream. cProfile slows Python code several times over and C code not at all, so the shares
matter more than the absolute figures; ``bench/run.py`` measures the real cost.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import KEY, Proc, free_port, plain, streams, wait_http

# Stages, by where a function lives (the first match wins); the rest is "other".
STAGES = [
    ("waiting (not counted)", ("asyncio/runners.py:run", "select", "poll", "sleep")),
    ("Granian (receive, send)", ("granian",)),
    (
        "stream relay (appliance)",
        (
            "appliance/http/sse",
            "appliance/backends/upstream_sse",
            "appliance/wire/sse",
            "appliance/http/streaming",
        ),
    ),
    (
        "usage, charging, metering",
        (
            "appliance/wire/usage",
            "appliance/http/charge",
            "appliance/http/metering",
            "appliance/accounting/",
        ),
    ),
    (
        "request edge, scope, sinks",
        (
            "appliance/http/access",
            "appliance/http/scope",
            "appliance/http/sinks",
            "appliance/http/exchange",
            "appliance/http/middleware",
        ),
    ),
    ("validation (pydantic)", ("pydantic", "appliance/wire/", "appliance/http/body")),
    ("routing, dispatch, gateway", ("appliance/serving/",)),
    ("upstream client (aiohttp)", ("aiohttp", "yarl", "multidict", "appliance/backends/")),
    ("JSON (orjson)", ("orjson",)),
    (
        "access log, metrics",
        (
            "structlog",
            "logging/",
            "appliance/runtime/logging",
            "prometheus_client",
            "appliance/runtime/metrics",
        ),
    ),
    ("Falcon", ("falcon",)),
    ("other appliance code", ("appliance/",)),
    ("asyncio, uvloop, builtins (C)", ("asyncio", "uvloop", "<built-in", "~", "<frozen")),
]


def stage_of(filename: str) -> str:
    for name, marks in STAGES:
        if any(mark in filename for mark in marks):
            return name
    return "other"


def table(path: Path) -> dict[str, float]:
    """Own time per stage in ms, from the profile at ``path``."""
    stats = pstats.Stats(str(path))
    out: dict[str, float] = {}
    for (filename, _, function), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(f"{filename}:{function}")
        out[stage] = out.get(stage, 0.0) + tottime * 1000
    return out


START, STOP = signal.SIGRTMIN, signal.SIGRTMIN + 1  # unused by the appliance


def serve_profiled(out: str, argv: list[str]) -> int:
    """``appliance`` with ``argv``, profiled from signal ``START`` to ``STOP`` (written to
    ``out``): start-up, warm-up and shutdown stay out of the profile."""
    import cProfile

    from appliance.cli import main as appliance

    # CPU time of the thread that runs the app, not the wall clock: on a shared machine a
    # call that waits for a core would otherwise count the wait.
    profiler = cProfile.Profile(time.thread_time)
    signal.signal(START, lambda *_: profiler.enable())

    def stop(*_: object) -> None:
        profiler.disable()
        profiler.dump_stats(out)

    signal.signal(STOP, stop)
    return appliance(argv)


def profile(kind: str, count: int, upstream: str, folder: Path) -> dict[str, float]:
    """Serve profiled, send ``count`` requests of ``kind`` after a warm-up, read the
    profile of those requests."""
    port = free_port()
    config = folder / "profile.yaml"
    config.write_text(
        "logging: {level: info, format: json}\n"
        f"auth: {{api_keys: [{{name: bench, key: {KEY}}}]}}\n"
        "models:\n"
        "  - name: bench\n"
        "    backend: openai\n"
        f"    options: {{base_url: '{upstream}', model: bench}}\n"
    )
    out = folder / f"{kind}-{count}.prof"
    argv = [sys.executable, __file__, "--serve", str(out), "serve"]
    proc = Proc([*argv, "-c", str(config), "--port", str(port)])
    base = f"http://127.0.0.1:{port}/v1"
    send = plain if kind == "plain" else streams
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
        asyncio.run(send(base, 1, 200))  # warm-up
        proc.process.send_signal(START)
        asyncio.run(send(base, 1, count))
        proc.process.send_signal(STOP)
        wait_until(out.exists)
    finally:
        proc.process.send_signal(signal.SIGTERM)
        proc.process.wait(60)
    return table(out)


def wait_until(ready: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not ready() and time.monotonic() < deadline:
        time.sleep(0.05)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        raise SystemExit(serve_profiled(sys.argv[2], sys.argv[3:]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    up_port = free_port()
    upstream = Proc([sys.executable, str(Path(__file__).parent / "upstream.py"), str(up_port)])
    up_base = f"http://127.0.0.1:{up_port}/v1"
    try:
        wait_http(f"{up_base}/models")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            if os.environ.get("PROFILE_KEEP"):  # to read the profiles themselves
                folder = Path(os.environ["PROFILE_KEEP"])
            plains = profile("plain", args.requests, up_base, folder)
            streamed = profile("stream", args.streams, up_base, folder)
            figures = {
                "plain request": per_request(plains, args.requests),
                "16-chunk stream": per_request(streamed, args.streams),
            }
    finally:
        upstream.stop()
    print("\ncProfile own time per request by stage (ms; cProfile inflates Python code)\n")
    names = [name for name, _ in STAGES[1:]] + ["other"]
    print(f"| {'stage':<32} | " + " | ".join(f"{k:>15}" for k in figures) + " |")
    print(f"|{'-' * 34}|" + "|".join("-" * 17 for _ in figures) + "|")
    for name in names:
        cells = " | ".join(f"{figures[k].get(name, 0.0):>15.3f}" for k in figures)
        print(f"| {name:<32} | {cells} |")
    waiting = STAGES[0][0]
    totals = " | ".join(
        f"{sum(v for k, v in f.items() if k != waiting):>15.3f}" for f in figures.values()
    )
    print(f"| {'total':<32} | {totals} |")


def per_request(total: dict[str, float], count: int) -> dict[str, float]:
    return {k: v / count for k, v in total.items()}


if __name__ == "__main__":
    main()
