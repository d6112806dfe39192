"""Calls to a local model's child that stop the model's work when they are given up.

Each call carries an id (the :data:`~appliance.child.CALL_HEADER` header). When
the call is cancelled (its client left, a drain cut it, its deadline passed), or a
stream is closed before its end, the worker asks the child to stop that generation
(``POST /calls/{id}/stop``) and waits for the answer, which comes once the child has
stopped: the request's slot is given back only when the model is free, so the next
request never waits inside the child behind work nobody reads.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar

import aiohttp
import structlog

from appliance.backends.base import ReplyStream
from appliance.errors import UpstreamConnectionError, UpstreamError

log = structlog.get_logger("appliance.local")

CALL: ContextVar[str] = ContextVar("appliance_local_call", default="")
"""The id of the call the current task is making to a child (set around one call)."""

STOP_WAIT_S = 10.0  # a child that has not stopped by then is not waited for longer


def new_call() -> str:
    return uuid.uuid4().hex


async def stop_call(
    session: aiohttp.ClientSession | None, root: str, call_id: str, worker_id: str
) -> None:
    """Ask the child at ``root`` to stop ``call_id``; returns once it has (or could not)."""
    if session is None or not call_id:
        return
    started = time.perf_counter()
    try:
        async with asyncio.timeout(STOP_WAIT_S):
            async with session.post(f"{root}/calls/{call_id}/stop") as response:
                answer = await response.json() if response.status == 200 else {}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        # A child that died or hangs: its supervisor and health checks deal with it.
        log.warning("local_call_stop_failed", worker=worker_id, error=type(exc).__name__)
        return
    log.info(
        "local_call_stopped",
        worker=worker_id,
        call=call_id,
        running=bool(answer.get("stopped")),
        wait_s=round(time.perf_counter() - started, 3),
    )


class StoppingStream:
    """A child's stream that stops the child's generation when closed before its end, and
    whose broken connection is told as what it was (``crashed``: the child's crash, if it
    died of one) rather than as a connection that failed."""

    def __init__(
        self,
        stream: ReplyStream,
        stop: Callable[[], Awaitable[None]],
        crashed: Callable[[UpstreamConnectionError], Awaitable[UpstreamError]],
    ) -> None:
        self._stream = stream
        self._stop = stop
        self._crashed = crashed
        self._ended = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except UpstreamConnectionError as exc:
            raise await self._crashed(exc) from exc
        self._ended = True

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            if not self._ended:
                self._ended = True
                await self._stop()
