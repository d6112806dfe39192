"""Generation that stops when its caller leaves or asks it to stop.

The engine blocks; each generation runs in a thread with a stop flag (a
:class:`threading.Event`) that the engine checks between tokens. The flag is set when

- the connection that asked for it closes (the parent gave the request up: its client
  left, or a drain cut it), noticed within :data:`POLL_S`;
- the parent asks for it by the call's id (``POST /calls/{id}/stop``, the id sent in the
  :data:`CALL_HEADER` header); that answer comes only once the thread has ended, so the
  parent frees the request's slot only when the model is free.

A plain request runs the same way as a stream: the thread is watched while it works.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import structlog
from aiohttp import web

from appliance.child import CALL_HEADER
from appliance.errors import APIError

log = structlog.get_logger("appliance.worker")

POLL_S = 0.2  # how often a waiting handler looks whether its connection closed

_END = object()


class Call:
    """One generation in flight: its stop flag and its thread's future."""

    __slots__ = ("call_id", "stop", "work")

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.stop = threading.Event()
        self.work: asyncio.Future[Any] | None = None

    async def ended(self) -> None:
        """Wait until the thread that generates has ended (never raises)."""
        if self.work is not None:
            await asyncio.gather(asyncio.shield(self.work), return_exceptions=True)


class Calls:
    """The generations in flight, by the id the parent gave them."""

    def __init__(self) -> None:
        self._running: dict[str, Call] = {}
        self._stopped: deque[str] = deque(maxlen=256)  # stopped before they arrived

    @contextlib.contextmanager
    def track(self, request: web.Request) -> Iterator[Call]:
        call_id = request.headers.get(CALL_HEADER, "")
        call = Call(call_id)
        if call_id in self._stopped:
            call.stop.set()
        if call_id:
            self._running[call_id] = call
        try:
            yield call
        finally:
            if self._running.get(call_id) is call:
                del self._running[call_id]

    async def stop(self, request: web.Request) -> web.Response:
        """``POST /calls/{id}/stop``: stop that generation; answers once it has ended."""
        call_id = request.match_info["id"]
        call = self._running.get(call_id)
        if call is None:
            self._stopped.append(call_id)
            return web.json_response({"stopped": False})
        call.stop.set()
        await call.ended()
        return web.json_response({"stopped": True})


def left(request: web.Request) -> bool:
    """Whether the connection that sent ``request`` has closed."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def plain(
    request: web.Request, call: Call, work: Callable[[threading.Event], dict[str, Any]]
) -> dict[str, Any] | None:
    """Run ``work(stop)`` in a thread; stop it if the connection closes meanwhile (then
    None: nobody is there to answer)."""
    future = call.work = asyncio.get_running_loop().run_in_executor(None, work, call.stop)
    try:
        while not (await asyncio.wait([future], timeout=POLL_S))[0]:
            if left(request):
                return None
    finally:
        stopped = call.stop.is_set() or not future.done()
        call.stop.set()  # a no-op once it ended
        await call.ended()
        if stopped:
            failed = future.cancelled() or future.exception() is not None
            usage = {} if failed else future.result().get("usage") or {}
            tokens = usage.get("completion_tokens")
            log.info("generation_stopped", call=call.call_id, completion_tokens=tokens)
    result: dict[str, Any] = future.result()
    return result


async def stream(
    request: web.Request, call: Call, produce: Callable[[threading.Event], Iterator[dict[str, Any]]]
) -> web.StreamResponse:
    """Run a blocking chunk generator in a thread and send its chunks as SSE."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    chunks = 0

    def pump() -> None:
        try:
            for chunk in produce(call.stop):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except BaseException as exc:  # handed to the event loop, which decides
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    call.work = loop.run_in_executor(None, pump)
    response: web.StreamResponse | None = None
    finished = False
    try:
        while True:
            item = await _next(request, queue)
            if item is _END:
                finished = True
                break
            if isinstance(item, BaseException):
                if response is None:
                    raise item  # nothing sent yet: a plain error response
                await response.write(b"data: " + orjson.dumps(envelope(item)) + b"\n\n")
                continue
            if response is None:
                response = web.StreamResponse(headers={"content-type": "text/event-stream"})
                await response.prepare(request)
            chunks += 1
            await response.write(b"data: " + orjson.dumps(item) + b"\n\n")
        if response is None:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
        await response.write(b"data: [DONE]\n\n")
        return response
    except ConnectionResetError:
        # The caller (the appliance) left: the model stops (below), and the response is
        # over; aiohttp would log a traceback for an exception, not for a 499.
        return response if response is not None else web.Response(status=499)
    finally:
        stopped = call.stop.is_set() or not finished
        call.stop.set()
        await call.ended()
        if stopped:
            log.info("generation_stopped", call=call.call_id, chunks=chunks)


async def _next(request: web.Request, queue: asyncio.Queue[Any]) -> Any:
    """The next chunk; notices a client that left while the model thinks."""
    while True:
        try:
            async with asyncio.timeout(POLL_S):  # no task per chunk, as wait_for makes
                return await queue.get()
        except TimeoutError:
            if left(request):
                raise ConnectionResetError("client went away") from None


def envelope(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, APIError):
        return exc.envelope()
    return APIError(f"The model failed: {type(exc).__name__}").envelope()
