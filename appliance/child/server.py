"""``appliance worker``: one model served over the OpenAI wire protocol.

The supervisor runs it as a child process on a loopback port; on another machine it
serves a model to appliances that list it as an ``openai`` upstream. It answers the same
routes and error envelope as the appliance, so the client side is the same code. The
engine blocks; it runs in a thread, so probes are answered while it generates, and a
generation stops within a token when its caller leaves or asks it to (:mod:`.calls`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import signal
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiohttp import web

from appliance.child import calls
from appliance.child.engines import load_engine
from appliance.child.engines.base import Engine
from appliance.config import ModelConfig
from appliance.errors import APIError, InvalidRequestError
from appliance.runtime import eventloop
from appliance.wire.openai import protocol, reply
from appliance.wire.openai.fields import LOCAL
from appliance.wire.openai.protocol import Endpoint

log = structlog.get_logger("appliance.worker")


class WorkerServer:
    """The aiohttp app around one engine."""

    def __init__(self, config: ModelConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.calls = calls.Calls()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/readyz", self._health)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/calls/{id}/stop", self.calls.stop)
        return app

    async def _health(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "model": self.config.name, "cpu": self.engine.cpu})

    async def _models(self, request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [reply.model_card(self.config.name, 0)]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(
            request,
            Endpoint.CHAT,
            protocol.ChatCompletionRequest,
            self.engine.chat,
            self.engine.chat_stream,
        )

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(
            request,
            Endpoint.COMPLETIONS,
            protocol.CompletionRequest,
            self.engine.completion,
            self.engine.completion_stream,
        )

    async def _generate(
        self,
        request: web.Request,
        endpoint: Endpoint,
        schema: type[protocol.SamplingRequest],
        plain: Callable[[dict[str, Any], threading.Event], dict[str, Any]],
        streamed: Callable[[dict[str, Any], threading.Event], Iterator[dict[str, Any]]],
    ) -> web.StreamResponse:
        # The engine reads the validated values (an int is an int), unknown fields kept.
        raw = self._body(endpoint, await _body(request))
        body = protocol.validate(schema, raw).model_dump(exclude_unset=True)
        with self.calls.track(request) as call:
            if body.get("stream"):
                return await calls.stream(request, call, lambda stop: streamed(body, stop))
            result = await calls.plain(request, call, lambda stop: plain(body, stop))
        # None: the caller left; the answer goes nowhere (499, nginx's "client closed")
        return _json(result) if result is not None else web.Response(status=499)

    async def _embeddings(self, request: web.Request) -> web.Response:
        req: protocol.EmbeddingRequest = protocol.validate(
            protocol.EmbeddingRequest, self._body(Endpoint.EMBEDDINGS, await _body(request))
        )
        value = req.input
        if not isinstance(value, str) and not all(isinstance(v, str) for v in value):
            raise InvalidRequestError(
                "Invalid 'input': this model takes text, not token arrays (lists of "
                "integers). Send the strings themselves; LangChain's OpenAIEmbeddings "
                "sends token arrays unless given check_embedding_ctx_length=False.",
                param="input",
                code="invalid_value",
            )
        size = self.engine.dimensions
        if req.dimensions is not None and size is not None and req.dimensions > size:
            raise InvalidRequestError(
                f"Invalid 'dimensions': this model's embeddings have {size} dimensions; "
                f"ask for at most {size}.",
                param="dimensions",
                code="invalid_value",
            )
        texts = [value] if isinstance(value, str) else [str(v) for v in value]
        vectors, tokens = await asyncio.to_thread(self.engine.embed, texts, req.dimensions)
        if req.encoding_format == "base64":
            vectors = [_base64(v) for v in vectors]
        return _json(reply.embedding_list(self.config.name, list(vectors), tokens))

    async def _rerank(self, request: web.Request) -> web.Response:
        body = self._body(Endpoint.RERANK, await _body(request))
        req = protocol.validate(protocol.RerankRequest, body)
        scores, tokens = await asyncio.to_thread(self.engine.rerank, req.query, req.documents)
        return _json(
            reply.rerank_result(
                self.config.name,
                scores,
                req.documents,
                req.top_n,
                bool(req.return_documents),
                tokens,
            )
        )

    def _body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        """``body``, if this model takes each of its fields (as the appliance checks before
        it sends one here; a child serving other appliances as an upstream checks here)."""
        refusal = LOCAL.refusal(endpoint, body, self.config.backend)
        if refusal is not None:
            raise refusal
        return body


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        return _json(
            {
                "error": {
                    "message": exc.reason,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
            },
            status=exc.status,
        )
    except APIError as exc:
        return _json(exc.envelope(), status=exc.status)
    except ConnectionResetError:
        raise
    except Exception as exc:
        log.exception("engine_failed")
        return _json(calls.envelope(exc), status=500)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_json")
    return body


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def _base64(vector: Any) -> str:
    """OpenAI's base64 embedding: little-endian float32."""
    if hasattr(vector, "astype"):
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: any free one; no host: every address)."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


FAULT_ENV = "APPLIANCE_TEST_WARMUP_SIGNAL"
"""A test seam: ``<model>:<SIGNAL>`` (``chat:SIGILL``) makes that model's worker process
kill itself with that signal at its warm-up, as a llama.cpp build that uses instructions
the CPU lacks does. Tests set it on a server they start; nothing else reads it."""


def warm_up(config: ModelConfig, engine: Engine) -> None:
    """Run the model once before reporting ready (see :meth:`Engine.warm_up`)."""
    name, _, fault = os.environ.get(FAULT_ENV, "").partition(":")
    if fault and name == config.name:
        log.warning("worker_test_fault", model=config.name, signal=fault)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file from a test
        os.kill(os.getpid(), signal.Signals[fault])
    engine.warm_up()
    log.info("worker_warmed_up", model=config.name, cpu=engine.cpu)


def run(
    config: ModelConfig, host: str, port: int, port_file: Path | None, with_parent: bool
) -> None:
    """Load the model, warm it up, listen, report the port, serve until SIGTERM/SIGINT.

    With ``with_parent`` (a supervised child) it also exits when its parent dies, so a
    killed appliance leaves no orphaned model processes behind.
    """
    parent = os.getppid()

    async def main() -> None:
        engine = await asyncio.to_thread(load_engine, config)
        await asyncio.to_thread(warm_up, config, engine)
        runner = web.AppRunner(WorkerServer(config, engine).app(), access_log=None)
        await runner.setup()
        sock = _listen(host, port)  # bound here, so its port is ours to read
        await web.SockSite(runner, sock).start()
        bound = sock.getsockname()[1]
        log.info("worker_listening", model=config.name, host=host, port=bound)
        if port_file is not None:
            tmp = port_file.with_suffix(".tmp")
            tmp.write_text(str(bound))
            tmp.rename(port_file)  # the supervisor never reads a half-written port
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if with_parent and os.getppid() != parent:
                log.warning("worker_orphaned", model=config.name)
                break
        await runner.cleanup()

    eventloop.run(main())
