"""An upstream stream's body as the ``openai`` worker reads it: the idle timeout it keeps
itself (one timer per stream, not aiohttp's per network read), and the connection that
goes back to the pool once a stream was read to its end."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from appliance.backends.openai import OpenAIWorker, Upstream
from appliance.config.backends import OpenAIModel
from appliance.errors import UpstreamTimeoutError
from appliance.wire.openai.protocol import Endpoint

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class Trickle:
    """An upstream that streams ``chunks`` chunks ``gap_s`` apart, recording the client
    connections (their ports) its requests came on. It runs on a loop of its own, in a
    thread, as a real upstream runs apart from the appliance."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append(peer[1] if peer else 0)
        body = await request.json()
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunks, gap = int(body.get("x_chunks", 3)), float(body.get("x_gap_s", 0))
        for i in range(chunks):
            if gap:
                await asyncio.sleep(gap)  # the upstream's own pace: a model between tokens
            delta = {"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}
            await response.write(event({"choices": [delta]}))
        finish = {"index": 0, "delta": {}, "finish_reason": "stop"}
        await response.write(event({"choices": [finish]}) + b"data: [DONE]\n\n")
        return response  # the body's end goes out in a write of its own

    async def __aenter__(self) -> Trickle:
        self.thread.start()
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(), self.loop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._stop(), self.loop))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"

    async def _stop(self) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def worker(base_url: str, idle_s: float = 60.0) -> OpenAIWorker:
    config = OpenAIModel.model_validate(
        {"name": "m", "backend": "openai", "options": {"base_url": base_url}}
    )
    upstream = Upstream(base_url=base_url, model="m", idle_timeout_s=idle_s)
    started = OpenAIWorker("m/0", config, upstream)
    await started.start()
    return started


async def read_all(payloads: AsyncIterator[bytes]) -> list[bytes]:
    return [payload async for payload in payloads]


async def test_streams_read_to_their_end_keep_their_connection() -> None:
    async with Trickle() as upstream:
        proxy = await worker(upstream.base_url)
        try:
            for _ in range(20):
                stream = await proxy.open_stream(Endpoint.CHAT, {**CHAT, "stream": True})
                try:
                    assert len(await read_all(aiter(stream))) == 4
                finally:
                    await stream.aclose()
        finally:
            await proxy.close()
    assert len(upstream.ports) == 20
    # Most reuse one (a body whose end comes late after [DONE] is closed instead).
    assert len(set(upstream.ports)) <= 10, "each stream opened a connection of its own"


async def test_a_stream_silent_for_its_idle_timeout_fails_with_a_timeout() -> None:
    async with Trickle() as upstream:
        proxy = await worker(upstream.base_url, idle_s=0.2)
        try:
            body = {**CHAT, "stream": True, "x_chunks": 2, "x_gap_s": 1.0}
            stream = await proxy.open_stream(Endpoint.CHAT, body)
            try:
                with pytest.raises(UpstreamTimeoutError):
                    await asyncio.wait_for(read_all(aiter(stream)), 10)
            finally:
                await stream.aclose()
        finally:
            await proxy.close()


async def test_a_stream_longer_than_its_idle_timeout_but_never_silent_that_long_is_whole() -> None:
    """The timeout is the longest wait for one read, not the stream's length: the stream's
    one timer follows each read."""
    async with Trickle() as upstream:
        proxy = await worker(upstream.base_url, idle_s=0.8)
        try:
            body = {**CHAT, "stream": True, "x_chunks": 12, "x_gap_s": 0.1}
            stream = await proxy.open_stream(Endpoint.CHAT, body)
            try:
                assert len(await asyncio.wait_for(read_all(aiter(stream)), 20)) == 13
            finally:
                await stream.aclose()
        finally:
            await proxy.close()
