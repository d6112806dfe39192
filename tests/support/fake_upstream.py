"""A real OpenAI-compatible HTTP server for tests, run on a loopback port in a thread.

What it does is chosen by the ``model`` it is asked for (the appliance sends the
configured upstream name), so one server plays every upstream a test needs:

- ``ok``: answers normally; streams ``x_chunks`` chunks ``x_chunk_delay_ms`` apart, with
  OpenAI's usage chunk when asked (``stream_options.include_usage``).
- ``fail-500``, ``fail-400``, ``fail-401``, ``fail-429``: that status with an error envelope
  (any ``fail-<status>`` works: ``fail-502``, ``fail-503``).
- ``hang``: never answers (until the client gives up).
- ``error-200``: answers ``200 application/json`` with an error object and no reply, as
  some servers and proxies do (OpenAI's layout; with ``vllm`` or ``tgi``, theirs).
- ``break-mid-stream``: streams two chunks, then drops the connection.
- ``truncated``: streams its chunks, then ends the body cleanly: no finish, no ``[DONE]``.
- ``error-mid-stream``: two chunks, then an error event and ``[DONE]``.
- ``corrupt-chunk``: after the first chunk, one that is cut off mid-JSON, then the rest.

Real servers differ in how they write JSON and usage, so a model name may add traits
after ``+`` (``ok+indented+nousage``):

- ``spaced``: JSON as Python's ``json.dumps`` writes it (``"usage": {``).
- ``indented``: pretty-printed, as OpenAI's API writes replies; stream chunks then span
  several ``data:`` lines (valid SSE, joined by newlines).
- ``nousage``: no usage anywhere, ``include_usage`` ignored (old servers).
- ``rejects-stream-options``: 400 naming ``stream_options`` (as ``param``) when it is sent;
  with ``vllm`` a 400 in vLLM's envelope, with ``tgi`` a 422 in TGI's: both name the field
  only in their message text.
- ``usage-on-finish``: the usage rides on the last choice chunk, not a chunk of its own.
- ``usage-every-chunk``: running usage on every chunk (vLLM's continuous usage stats).
- ``html``: a plain reply is ``200 text/html`` (a proxy's page, a misrouted URL).
- ``sets-cookie``: replies carry ``Set-Cookie`` (a load balancer's stickiness cookie).
- ``crlf``: SSE lines end in CRLF (as some servers on Windows, or behind proxies, write).
- ``dribble``: each SSE event is written in pieces of 5 bytes, each flushed on its own,
  so lines (and ``[DONE]``) arrive split across reads.
- ``endless-line``: a stream whose first line never ends (3 MB and counting).
- ``cr``: SSE lines end in a bare CR (legal SSE, rarely written).
- ``nodone``: a stream ends after its finish (and usage) without ``data: [DONE]``.
- ``junk``: ``data: keep-alive`` and empty ``data:`` events between the chunks.
- ``tgi``, ``vllm``: an ``error-mid-stream`` error written as TGI or vLLM write it.
- ``html`` on a ``fail-<status>``: the status with an HTML error page, as nginx writes
  it in front of a dead backend (``fail-502+html``: ``502 Bad Gateway``, ``text/html``).
- ``retry-after``: a ``fail-<status>`` (``fail-429+retry-after``) also sends
  ``Retry-After: 7`` (:data:`RETRY_AFTER_S`), as OpenAI's and vLLM's rate limits do.
- ``stream-as-json``: a streamed request is answered with the whole reply as one
  ``application/json`` body, as servers that do not stream (or ignore ``stream``) do.
- ``huge-usage``: the usage it reports (plain, or a stream's usage chunk) claims
  :data:`HUGE_TOKENS` (10^19) prompt tokens, as a broken server might: a figure no
  ledger column can hold.
- ``slow-body``: a plain reply's headers go at once, its body ``x_body_delay_ms`` later
  (an upstream or proxy that stalls mid-reply).
- ``unnamed``: replies and stream chunks without a ``model`` key (a server that names none).
- ``echo-auth``: an error (a ``fail-<status>``'s, an ``error-mid-stream``'s, on chat and
  on ``/v1/responses``) quotes the credentials the request carried (its
  ``Authorization``, ``api-key`` and ``x-api-key`` headers), as servers that say
  ``Incorrect API key provided: ...`` do (:func:`echoed`).
- ``toolcall``: a chat reply that calls ``get_weather({"city": "Paris"})``; streamed in
  OpenAI's delta shape (id and name first, then the arguments in two pieces).

Embeddings honour ``encoding_format: base64`` as OpenAI does (little-endian float32,
base64-encoded: what the openai SDK asks for unless told otherwise); the vectors are
``[len(text), 1.0]`` either way.

A worker's base URL may carry a first path segment, ``fake.url("name")`` ->
``http://host:port/name/v1``: the fake serves the same routes under it, and each request
and probe records it (``Seen.base``, ``probes_of``), so one fake plays several workers of
one model and a test counts what each saw. A base named ``probe-<status>``
(``probe-503``) answers the health probe ``GET .../models`` with that status and an error
envelope, and serves requests as usual: a worker whose probe fails while it would serve.

With ``native_responses=True`` it also serves OpenAI's ``POST /v1/responses`` (a fixed
``native reply``, plain or as typed events with ``event:`` lines; ``error-mid-stream``: its
``error`` and ``response.failed`` events, or plain, a 200 Response whose ``status`` is
``failed``); without, that route is a 404, as on an OpenAI-compatible server that has only
chat completions.

``x_first_delay_ms`` delays the start of any answer. While it waits, and between chunks,
it watches its connection: a client that leaves is recorded in ``disconnects`` (the
monotonic time it was noticed). Every request is recorded (path, headers, JSON body);
``GET /models`` (the appliance's health probe) only counts in ``probes``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
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
    base: str = ""  # the base URL's first path segment ("" for ``/v1``): which worker


@dataclass
class FakeUpstream:
    """Start with :meth:`start`, stop with :meth:`stop`."""

    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Seen] = field(default_factory=list)
    disconnects: list[float] = field(default_factory=list)
    probes: int = 0
    probes_of: dict[str, int] = field(default_factory=dict)  # per base ("" for ``/v1``)
    native_responses: bool = False

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def url(self, base: str) -> str:
        """A base URL under its own first path segment (one worker among several)."""
        return f"http://{self.host}:{self.port}/{base}/v1"

    def seen(self, base: str | None = None, model: str | None = None) -> list[Seen]:
        """The requests received (through the worker ``base``, asking for ``model``)."""
        return [
            r
            for r in self.requests
            if (base is None or r.base == base) and (model is None or r.body.get("model") == model)
        ]

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
        for root in ("/v1", "/{base}/v1"):
            app.router.add_get(f"{root}/models", self._models)
            for path in ("chat/completions", "completions", "embeddings", "rerank"):
                app.router.add_post(f"{root}/{path}", self._generate)
            if self.native_responses:
                app.router.add_post(f"{root}/responses", self._responses)
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
        base = request.match_info.get("base", "")
        self.probes_of[base] = self.probes_of.get(base, 0) + 1
        if base.startswith("probe-") and base.removeprefix("probe-").isdigit():
            status = int(base.removeprefix("probe-"))
            error = {"message": f"fake probe says {status}", "type": "fake_error", "code": None}
            return web.json_response({"error": {**error, "param": None}}, status=status)
        return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model"}]})

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        base = request.match_info.get("base", "")
        kind = request.path.removeprefix(f"/{base}" if base else "").removeprefix("/v1/")
        self.requests.append(Seen(kind, dict(request.headers), body, base))
        model, *listed = body.get("model", "").split("+")
        traits = frozenset(listed)
        if "rejects-stream-options" in traits and "stream_options" in body:
            return _stream_options_refusal(traits)
        if model.startswith("fail-"):
            status = int(model.removeprefix("fail-"))
            headers = {"Retry-After": str(RETRY_AFTER_S)} if "retry-after" in traits else None
            if "html" in traits:
                page = _nginx_page(status)
                return web.Response(
                    text=page, content_type="text/html", status=status, headers=headers
                )
            return web.json_response(
                {
                    "error": {
                        "message": f"fake says {status}{echoed(request, traits)}",
                        "type": "fake_error",
                        "param": "messages" if status == 400 else None,
                        "code": "fake",
                    }
                },
                status=status,
                headers=headers,
            )
        if model == "error-200":
            return _json_response(_stream_error(traits, echoed(request, traits)), traits)
        if model == "hang":
            await asyncio.sleep(30)
        await self._wait(request, float(body.get("x_first_delay_ms", 0)) / 1000)
        if kind == "embeddings":
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            as_base64 = body.get("encoding_format") == "base64"
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(t, as_base64)}
                for i, t in enumerate(inputs)
            ]
            reply = {"object": "list", "data": data, "model": model}
            reply["usage"] = {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}
            return _json_response(reply, traits)
        if kind == "rerank":
            results = [
                {"index": i, "relevance_score": 1.0 / (i + 1)}
                for i in range(len(body["documents"]))
            ]
            reply = {"id": "rr", "model": model, "results": results}
            reply["usage"] = {"total_tokens": 3}
            return _json_response(reply, traits)
        if "toolcall" in traits:
            return await self._tool_call(request, body, model, traits)
        if body.get("stream") and "stream-as-json" not in traits:
            return await self._stream(request, body, model, traits)
        if "html" in traits:
            return web.Response(text="<html>hi</html>", content_type="text/html")
        reply = _completion(model, "fake reply")
        if "huge-usage" in traits:
            reply["usage"] = _usage(HUGE_TOKENS, PLAIN_COMPLETION_TOKENS)
        if "slow-body" in traits:
            return await self._slow_body(request, body, _dumps(reply, traits))
        return _json_response(reply, traits)

    async def _slow_body(
        self, request: web.Request, body: dict[str, Any], data: bytes
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"content-type": "application/json", "content-length": str(len(data))}
        )
        await response.prepare(request)
        await self._wait(request, float(body.get("x_body_delay_ms", 0)) / 1000)
        await response.write(data)
        await response.write_eof()
        return response

    async def _tool_call(
        self, request: web.Request, body: dict[str, Any], model: str, traits: frozenset[str]
    ) -> web.StreamResponse:
        call = {"id": "call_fake1", "type": "function"}
        if not body.get("stream"):
            reply = _completion(model, None)
            reply["choices"][0]["finish_reason"] = "tool_calls"
            reply["choices"][0]["message"]["tool_calls"] = [
                {**call, "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            ]
            return _json_response(reply, traits)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        deltas = [
            {"index": 0, **call, "function": {"name": "get_weather", "arguments": ""}},
            {"index": 0, "function": {"arguments": '{"city": '}},
            {"index": 0, "function": {"arguments": '"Paris"}'}},
        ]
        for delta in deltas:
            chunk = _chunk(model, None)
            chunk["choices"][0]["delta"] = {"tool_calls": [delta]}
            await response.write(_sse(chunk, traits))
        await response.write(_sse(_chunk(model, None, "tool_calls"), traits))
        if (body.get("stream_options") or {}).get("include_usage"):
            final = {**_chunk(model, None), "choices": [], "usage": _usage(PROMPT_TOKENS, 4)}
            await response.write(_sse(final, traits))
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        """OpenAI's own Responses API, for upstreams that serve it natively."""
        body = await request.json()
        base = request.match_info.get("base", "")
        self.requests.append(Seen("responses", dict(request.headers), body, base))
        model, *listed = body.get("model", "").split("+")
        echo = echoed(request, frozenset(listed))
        if model.startswith("fail-"):
            status = int(model.removeprefix("fail-"))
            error = {"message": f"fake says {status}{echo}", "type": "fake_error", "param": "input"}
            return web.json_response({"error": {**error, "code": "fake"}}, status=status)
        reply = _native_response(model, "native reply")
        if not body.get("stream"):
            if model == "error-mid-stream":  # plain: a 200 Response that failed, as OpenAI's
                error = {"code": "server_error", "message": f"native failure{echo}"}
                reply = {**reply, "status": "failed", "output": [], "error": error}
            return web.json_response(reply)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        item = reply["output"][0]
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**reply, "status": "in_progress"}},
            {"type": "response.output_item.added", "output_index": 0, "item": item},
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": "native ",
                "logprobs": [],
            },
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": 0,
                "content_index": 0,
                "delta": "reply",
                "logprobs": [],
            },
            {"type": "response.completed", "response": reply},
        ]
        if model == "error-mid-stream":  # the upstream's own failure events
            failed = {
                **reply,
                "status": "failed",
                "error": {"code": "server_error", "message": f"native failure{echo}"},
            }
            events[3:] = [
                {
                    "type": "error",
                    "code": "server_error",
                    "message": f"native failure{echo}",
                    "param": None,
                },
                {"type": "response.failed", "response": failed},
            ]
        elif model == "truncated":
            del events[3:]  # the body ends after the first delta, without a word
        for seq, event in enumerate(events):
            payload = orjson.dumps({**event, "sequence_number": seq})
            await response.write(
                b"event: " + event["type"].encode() + b"\ndata: " + payload + b"\n\n"
            )
        return response

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, traits: frozenset[str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        chunks = int(body.get("x_chunks", 3))
        delay = float(body.get("x_chunk_delay_ms", 0)) / 1000
        asked = bool((body.get("stream_options") or {}).get("include_usage"))
        with_usage = asked and "nousage" not in traits
        every = "usage-every-chunk" in traits
        prompt = HUGE_TOKENS if "huge-usage" in traits else PROMPT_TOKENS

        def usage_field(chunk: dict[str, Any], done: int) -> dict[str, Any]:
            if with_usage:
                chunk["usage"] = _usage(prompt, done) if every else None
            return chunk

        async def send(event: bytes) -> None:
            if "crlf" in traits:
                event = event.replace(b"\n", b"\r\n")
            if "cr" in traits:
                event = event.replace(b"\n", b"\r")
            if "dribble" not in traits:
                await response.write(event)
                return
            for start in range(0, len(event), 5):
                await response.write(event[start : start + 5])
                await asyncio.sleep(0.0005)  # each piece its own TCP segment

        if "endless-line" in traits:
            await response.write(b"data: " + b"x" * 3_000_000)
            await self._wait(request, 30)
            return response
        try:
            for i in range(chunks):
                await self._wait(request, delay)
                if "junk" in traits:
                    await send(b"data: keep-alive\n\ndata:\n\n")
                chunk = usage_field(_chunk(model, f"c{i} "), i + 1)
                await send(_sse(chunk, traits))
                if model == "break-mid-stream" and i == 1:
                    await asyncio.sleep(0.2)  # let the chunks be read, then fail
                    request.transport.close()  # type: ignore[union-attr]
                    return response
                if model == "error-mid-stream" and i == 1:
                    error = _stream_error(traits, echoed(request, traits))
                    await send(_sse(error, traits) + b"data: [DONE]\n\n")
                    return response
                if model == "corrupt-chunk" and i == 0:
                    await send(b'data: {"choices": [{"index": 0, "delta": {"cont\n\n')
            if model == "truncated":
                return response  # a clean end of the body: no finish, no usage, no [DONE]
            last = usage_field(_chunk(model, None, "stop"), chunks)
            if with_usage and "usage-on-finish" in traits:
                last["usage"] = _usage(prompt, chunks)
            await send(_sse(last, traits))
            if with_usage and not every and "usage-on-finish" not in traits:
                final = {**_chunk(model, None), "choices": [], "usage": _usage(prompt, chunks)}
                await send(_sse(final, traits))
            if "nodone" not in traits:
                await send(b"data: [DONE]\n\n")
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


PROMPT_TOKENS = 5  # every chat/completion request "reads" this many tokens
RETRY_AFTER_S = 7  # what ``retry-after`` sends
PLAIN_COMPLETION_TOKENS = 2  # and a plain reply "writes" this many
HUGE_TOKENS = 10**19  # the prompt tokens ``huge-usage`` claims (past SQLite's INTEGER)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _dumps(obj: Any, traits: frozenset[str]) -> bytes:
    """JSON in the layout the traits ask for."""
    if "nousage" in traits and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "usage"}
    if "unnamed" in traits and isinstance(obj, dict):
        obj = {k: v for k, v in obj.items() if k != "model"}
    if "indented" in traits:
        return json.dumps(obj, indent=2).encode()
    if "spaced" in traits:
        return json.dumps(obj).encode()
    return orjson.dumps(obj)


def _vector(text: str, as_base64: bool) -> list[float] | str:
    """An embedding: ``[len(text), 1.0]``, or its float32 bytes in base64 (OpenAI's way)."""
    vector = [float(len(text)), 1.0]
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _nginx_page(status: int) -> str:
    """The error page nginx writes when its backend fails."""
    title = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}
    line = f"{status} {title.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n"
        f"<center><h1>{line}</h1></center>\r\n<hr><center>nginx/1.24.0</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def _stream_options_refusal(traits: frozenset[str]) -> web.Response:
    """A 400 or 422 refusing ``stream_options``, as the server the traits name writes it."""
    if "vllm" in traits:  # the field named only in the message, the error at the top
        detail = (
            "[{'type': 'extra_forbidden', 'loc': ('body', 'stream_options'), "
            "'msg': 'Extra inputs are not permitted', 'input': {'include_usage': True}}]"
        )
        vllm = {"object": "error", "message": detail, "type": "BadRequestError"}
        return web.json_response({**vllm, "param": None, "code": 400}, status=400)
    if "tgi" in traits:  # TGI's {"error": text, "error_type"}, a 422
        text = (
            "Failed to deserialize the JSON body into the target type: unknown field "
            "`stream_options` at line 1 column 120"
        )
        return web.json_response({"error": text, "error_type": "validation"}, status=422)
    error: dict[str, Any] = {
        "message": "Unrecognized request argument supplied: stream_options",
        "type": "invalid_request_error",
        "param": "stream_options",
        "code": None,
    }
    return web.json_response({"error": error}, status=400)


def echoed(request: web.Request, traits: frozenset[str]) -> str:
    """With ``echo-auth``: the credentials ``request`` carried, as an error quotes them."""
    if "echo-auth" not in traits:
        return ""
    sent = [f"{name}: {request.headers[name]}" for name in ECHOED if name in request.headers]
    return f". Incorrect API key provided: {'; '.join(sent) or 'none'}"


ECHOED = ("Authorization", "api-key", "x-api-key")  # the headers ``echo-auth`` quotes


def _stream_error(traits: frozenset[str], echo: str = "") -> dict[str, Any]:
    """An error event inside a stream, as the server the traits name writes it (its
    message ending in ``echo``)."""
    if "tgi" in traits:
        text = f"Request failed during generation: out of memory{echo}"
        return {"error": text, "error_type": "oom"}
    if "vllm" in traits:
        return {
            "object": "error",
            "message": f"KV cache is full{echo}",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    return {
        "error": {
            "message": f"The model is overloaded{echo}",
            "type": "server_error",
            "param": None,
            "code": "overloaded",
        }
    }


def _json_response(obj: Any, traits: frozenset[str]) -> web.Response:
    response = web.Response(body=_dumps(obj, traits), content_type="application/json")
    if "sets-cookie" in traits:
        response.set_cookie("AWSALB", "sticky-to-whoever-asked-first")
    return response


def _sse(obj: Any, traits: frozenset[str]) -> bytes:
    """One SSE event; a multi-line payload becomes several ``data:`` lines."""
    lines = _dumps(obj, traits).split(b"\n")
    return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def _completion(model: str, text: str | None) -> dict[str, Any]:
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
        "usage": _usage(PROMPT_TOKENS, PLAIN_COMPLETION_TOKENS),
    }


def _native_response(model: str, text: str) -> dict[str, Any]:
    """A completed Response object, as OpenAI's /v1/responses answers."""
    return {
        "id": "resp_fake",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "metadata": {},
        "model": model,
        "output": [
            {
                "id": "msg_fake",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "temperature": None,
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "usage": {
            "input_tokens": 7,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": 3,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 10,
        },
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
