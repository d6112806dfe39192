"""What the appliance's own request path costs: CPU per request through the whole app.

``python bench/edge.py`` drives the app in-process with raw ASGI calls (no sockets, no
HTTP client, uvloop's event loop as served), on a scripted model from the default-style
config (one key, no limits): plain chat requests and streamed ones (five chunks). What it
measures is everything our code does for a request, from the ASGI edge to its end: the
request scope, routing, auth, the gateway and dispatch, the scripted worker, charging
(metrics, key spend), the access line (the served JSON logging, written to ``/dev/null``)
and the relay.

``python bench/edge.py --compare OLD NEW`` runs the same measurement with each tree's
``appliance`` package first on ``PYTHONPATH``, alternating five times, and prints both
side by side with the median of each and their ratio (a tree is a checkout's root, e.g.
``git worktree add /tmp/old <rev>``). It is a benchmark: it prints figures and fails on
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternate

CONFIG = {
    "models": [{"name": "m", "backend": "scripted", "options": {"reply": ["one two three four"]}}],
    "auth": {"api_keys": [{"name": "team", "key": "k-team"}]},
    "logging": {"access_log": True},
}
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
STREAM = json.dumps(
    {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
).encode()


# Where the apps' access lines go: /dev/null, open while they log.
NOWHERE = open(os.devnull, "w")  # noqa: SIM115


async def started_app(settings: dict[str, Any]) -> tuple[Any, Any]:
    """The app for the config ``settings`` and its started cluster, logging as served (the
    JSON chain, one line a request, flushed) into /dev/null; other log lines are off."""
    import logging

    from appliance.config import ApplianceConfig
    from appliance.http.app import create_app
    from appliance.runtime.logging import configure_logging
    from appliance.serving.cluster import Cluster

    config = ApplianceConfig.model_validate(settings)
    stdout, sys.stdout = sys.stdout, NOWHERE
    try:
        configure_logging(config.logging, config.secrets())
    finally:
        sys.stdout = stdout
    logging.disable(logging.CRITICAL)
    cluster = Cluster.from_config(config)
    await cluster.start()
    return create_app(config, cluster=cluster), cluster


async def measure(requests: int) -> dict[str, float]:
    """CPU microseconds per plain and per streamed request, in this process."""
    app, cluster = await started_app(CONFIG)
    out = {}
    try:
        for name, body in (("plain", BODY), ("stream", STREAM)):
            for _ in range(50):  # warm
                await _one(app, body)
            started = time.process_time()
            for _ in range(requests):
                status = await _one(app, body)
                assert status == 200, status
            out[name] = (time.process_time() - started) / requests * 1e6
    finally:
        await cluster.close()
    return out


async def _one(app: Any, body: bytes) -> int:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", b"Bearer k-team"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    sent = False
    status = 0
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # the client stays: no disconnect
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


def show(args: argparse.Namespace, figures: dict[str, float]) -> None:
    for kind, value in figures.items():
        print(f"{kind}: {value:.1f} CPU microseconds per request")


TABLE = alternate.Table(
    title="CPU microseconds per request, {requests} requests a run, {rounds} runs each",
    header=f"{'':8}{'old (median)':>14}{'new (median)':>14}{'new/old':>9}   runs old | new",
    row="{name:8}{old:>14.1f}{new:>14.1f}{ratio:>9.2f}   {runs}",
)


def main() -> None:
    alternate.main(
        __doc__,
        __file__,
        {"requests": 2000},
        rounds=5,
        measure=lambda args: alternate.on_uvloop(measure(args.requests)),
        show=show,
        table=TABLE,
    )


if __name__ == "__main__":
    main()
