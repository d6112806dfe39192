"""A real OpenAI-compatible HTTP server for tests, run on a loopback port in a thread.

What it does is chosen by the ``model`` it is asked for (the appliance sends the
configured upstream name), so one server plays every upstream a test needs:

- ``ok``: answers normally; streams ``x_chunks`` chunks ``x_chunk_delay_ms`` apart.
- ``fail-500``, ``fail-400``, ``fail-401``, ``fail-429``: that status with an error envelope.
- ``hang``: never answers (until the client gives up).
- ``break-mid-stream``: streams two chunks, then drops the connection.

``x_first_delay_ms`` delays the start of any answer. While it waits, and between chunks,
it watches its connection: a client that leaves is recorded in ``disconnects`` (the
monotonic time it was noticed). Every request is recorded (path, headers, JSON body);
``GET /models`` (the appliance's health probe) only counts in ``probes``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


class _ClientGone(ConnectionResetError):
    """The appliance closed the connection while the fake was waiting."""


@dataclass
class Seen:
    """One request the fake received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    probes: int = 0

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> FakeUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        asyncio.run_coroutine_threadsafe(self._cancel_rest(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        for path in ("chat/completions", "completions", "embeddings", "rerank"):
            app.router.add_post(f"/v1/{path}", self._generate)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _cancel_rest(self) -> None:
        """End handlers still running (a ``hang``), so none is left pending."""
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    async def _models(self, request: web.Request) -> web.Response:
        self.probes += 1
        return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model"}]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        kind = request.path.removeprefix("/v1/")
        self.requests.append(Seen(kind, dict(request.headers), body))
        model = body.get("model", "")
        if model.startswith("fail-"):
            status = int(model.removeprefix("fail-"))
            return web.json_response(
                {
                    "error": {
                        "message": f"fake says {status}",
                        "type": "fake_error",
                        "param": "messages" if status == 400 else None,
                        "code": "fake",
                    }
                },
                status=status,
            )
        if model == "hang":
            await asyncio.sleep(30)
        await self._wait(request, float(body.get("x_first_delay_ms", 0)) / 1000)
        if kind == "embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0]}
                for i, t in enumerate(inputs)
            ]
            return web.json_response(
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                }
            )
        if kind == "rerank":
            results = [
                {"index": i, "relevance_score": 1.0 / (i + 1)}
                for i in range(len(body["documents"]))
            ]
            return web.json_response(
                {"id": "rr", "model": model, "results": results, "usage": {"total_tokens": 3}}
            )
        if body.get("stream"):
            return await self._stream(request, body, model)
        return web.json_response(_completion(model, "fake reply"))

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunks = int(body.get("x_chunks", 3))
        delay = float(body.get("x_chunk_delay_ms", 0)) / 1000
        try:
            for i in range(chunks):
                await self._wait(request, delay)
                await response.write(b"data: " + orjson.dumps(_chunk(model, f"c{i} ")) + b"\n\n")
                if model == "break-mid-stream" and i == 1:
                    await asyncio.sleep(0.2)  # let the chunks be read, then fail
                    request.transport.close()  # type: ignore[union-attr]
                    return response
            await response.write(b"data: " + orjson.dumps(_chunk(model, None, "stop")) + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
        except _ClientGone:
            raise
        except ConnectionResetError:
            self.disconnects.append(time.monotonic())
            raise
        return response

    async def _wait(self, request: web.Request, seconds: float) -> None:
        """Sleep, but notice (and record) a client that goes away meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                self.disconnects.append(time.monotonic())
                raise _ClientGone("client went away")
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.02))


def _completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }


def _chunk(model: str, text: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
