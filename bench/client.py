"""What the upstream side costs: CPU per proxied call and per relayed stream, the client alone.

``python bench/client.py`` starts ``bench/upstream.py`` and, in this process, sends it
plain chat requests and 16-chunk streams one at a time two ways: as the floor does
(``bench/floor.py``: one pooled aiohttp session, ``post``, ``read`` or ``iter_any``) and
through the appliance's ``openai`` worker (:class:`appliance.backends.openai.OpenAIWorker`:
its request, its checks, the reply's usage; for streams the SSE reading and the relay with
its usage tally and framing). The upstream runs in a process of its own, so the CPU
measured is this process's: the client side alone, no server in front of it.

``python bench/client.py --compare OLD NEW`` runs it with each tree's ``appliance`` first
on ``PYTHONPATH``, alternating, and prints the medians (as ``bench/relay.py --compare``).
It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternate
from run import Proc, free_port, wait_http

HERE = Path(__file__).resolve().parent
CHAT: dict[str, Any] = {"model": "bench", "messages": [{"role": "user", "content": "Say hi."}]}


async def _cpu(count: int, one: Callable[[], Awaitable[object]]) -> float:
    """CPU microseconds per ``one()``, after a warm-up."""
    for _ in range(min(200, count)):
        await one()
    started = time.process_time()
    for _ in range(count):
        await one()
    return (time.process_time() - started) * 1e6 / count


async def measure(base: str, requests: int, streams: int) -> dict[str, float]:
    import aiohttp
    import orjson

    from appliance.backends.openai import OpenAIWorker, Upstream
    from appliance.config.backends import OpenAIModel
    from appliance.http.sse import LiveStreams, Relay
    from appliance.wire.openai.protocol import Endpoint
    from appliance.wire.usage import StreamTally, of_reply

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = f"{base}/chat/completions"
    plain_body = orjson.dumps(CHAT)
    stream_request = {**CHAT, "stream": True}
    stream_body = orjson.dumps(stream_request)

    async def floor_plain() -> bytes:
        reply = await session.post(
            url, data=plain_body, headers={"content-type": "application/json"}
        )
        raw = await reply.read()
        reply.release()
        return raw

    async def floor_stream() -> int:
        reply = await session.post(
            url, data=stream_body, headers={"content-type": "application/json"}
        )
        size = 0
        try:
            async for piece in reply.content.iter_any():
                size += len(piece)
        finally:
            reply.release()
        return size

    config = OpenAIModel.model_validate(
        {"name": "bench", "backend": "openai", "options": {"base_url": base}}
    )
    worker = OpenAIWorker("bench/0", config, Upstream.of(config, base))
    await worker.start()
    live = LiveStreams()

    async def ours_plain() -> object:
        raw = await worker.call(Endpoint.CHAT, CHAT)
        return of_reply(raw, CHAT)

    async def ours_stream() -> int:
        stream = await worker.open_stream(Endpoint.CHAT, stream_request, usage=True)
        tally = StreamTally(client_asked=False)
        relay = Relay(stream, 15.0, live, tally)
        size = 0
        async for event in relay.events():
            if event is not None:
                size += len(event.frame)
        tally.result(stream_request)
        return size

    out = {
        "floor plain": await _cpu(requests, floor_plain),
        "ours plain": await _cpu(requests, ours_plain),
        "floor stream": await _cpu(streams, floor_stream),
        "ours stream": await _cpu(streams, ours_stream),
    }
    await worker.close()
    await session.close()
    return out


def here(args: argparse.Namespace) -> dict[str, float]:
    """One run: the upstream started in a process of its own, the client measured here."""
    port = free_port()
    upstream = Proc([sys.executable, str(HERE / "upstream.py"), str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models")
        base = f"http://127.0.0.1:{port}/v1"
        return alternate.on_uvloop(measure(base, args.requests, args.streams))
    finally:
        upstream.stop()


def show(args: argparse.Namespace, figures: dict[str, float]) -> None:
    for figure, value in figures.items():
        print(f"{figure:14} {value:7.1f} CPU microseconds")


TABLE = alternate.Table(
    title="CPU microseconds, client side, medians of {rounds} runs each",
    row="{name:14} old {old:7.1f}  new {new:7.1f}  new/old {ratio:.2f}",
)


def main() -> None:
    alternate.main(
        __doc__,
        __file__,
        {"requests": 3000, "streams": 1000},
        rounds=5,
        measure=here,
        show=show,
        table=TABLE,
    )


if __name__ == "__main__":
    main()
