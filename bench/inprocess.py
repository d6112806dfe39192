"""The appliance against its floor with no server between: ``python bench/inprocess.py``.

Both apps run in this process on uvloop and are called with raw ASGI messages (as
``bench/edge.py`` does), each in front of ``bench/upstream.py`` in another process through
its own aiohttp session: the floor's app (``bench/floor.py``'s Falcon resource, relaying
bytes) and the appliance with the benchmark's config (one key, an ``openai`` model, the
JSON access line into ``/dev/null``), plus the appliance with one part of that config
off at a time. What it prints is this process's CPU per plain request and per 16-chunk
stream, the median of ``--rounds`` alternating rounds, and each against the floor: no
Granian, no load generator and no upstream in the figures, only the two apps and their
upstream clients. It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternate
from edge import _one, started_app
from floor import Relay
from run import HERE, Proc, free_port, wait_http

VARIANTS: dict[str, dict[str, Any]] = {
    "appliance": {},
    "no access line": {"logging": {"access_log": False}},
    "no key": {"auth": {"api_keys": []}},
}


def _body(model: str, stream: bool) -> bytes:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def _appliance(upstream: str, extra: dict[str, Any]) -> tuple[Any, Any]:
    settings: dict[str, Any] = {
        "models": [{"name": "bench", "backend": "openai", "options": {"base_url": upstream}}],
        "auth": {"api_keys": [{"name": "team", "key": "k-team"}]},
        "logging": {"access_log": True},
        **extra,
    }
    return await started_app(settings)


async def measure(upstream: str, name: str, requests: int, streams: int) -> dict[str, float]:
    """CPU microseconds per plain request and per stream of one app, in this process."""
    import falcon.asgi

    cluster = None
    if name == "floor":
        app: Any = falcon.asgi.App()
        relay = Relay(upstream)
        app.add_route("/v1/chat/completions", relay)
    else:
        app, cluster = await _appliance(upstream, VARIANTS[name])
    out = {}
    try:
        for kind, count in (("plain", requests), ("stream", streams)):
            body = _body("bench", kind == "stream")
            for _ in range(50):  # warm
                await _one(app, body)
            started = time.process_time()
            for _ in range(count):
                status = await _one(app, body)
                assert status == 200, status
            out[kind] = (time.process_time() - started) / count * 1e6
    finally:
        if cluster is not None:
            await cluster.close()
        elif relay.session is not None:
            await relay.session.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ResourceWarning)
    port = free_port()
    upstream = Proc([sys.executable, str(HERE / "upstream.py"), str(port)])
    base = f"http://127.0.0.1:{port}/v1"
    names = ["floor", *VARIANTS]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    try:
        wait_http(f"{base}/models")
        for round_ in range(args.rounds):
            for name in names if round_ % 2 == 0 else names[::-1]:
                work = measure(base, name, args.requests, args.streams)
                runs[name].append(alternate.on_uvloop(work))
    finally:
        upstream.stop()
    print(
        f"CPU microseconds per request in this process, median of {args.rounds} rounds "
        f"({args.requests} plain requests, {args.streams} 16-chunk streams a round)"
    )
    print(f"{'':16}{'plain':>9}{'/ floor':>9}{'stream':>9}{'/ floor':>9}")
    floor = {kind: statistics.median(r[kind] for r in runs["floor"]) for kind in runs["floor"][0]}
    for name in names:
        plain = statistics.median(r["plain"] for r in runs[name])
        stream = statistics.median(r["stream"] for r in runs[name])
        print(
            f"{name:16}{plain:>9.1f}{plain / floor['plain']:>8.2f}x"
            f"{stream:>9.1f}{stream / floor['stream']:>8.2f}x"
        )


if __name__ == "__main__":
    main()
