"""Relaying a worker's stream as server-sent events.

Falcon notices a client disconnect only when the generator yields, so while the next
chunk is slow to come this yields ``None`` every ``ping_s`` (Falcon sends ``: ping``,
which OpenAI clients ignore). Errors never escape: once streaming has begun they become
an ``{"error": ...}`` event followed by ``[DONE]``, which the openai SDK raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import structlog

from appliance.errors import APIError
from appliance.workers import ReplyStream

log = structlog.get_logger("appliance.stream")


class Event:
    """Pre-framed SSE bytes, which Falcon sends as they are."""

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def serialize(self, handler: Any = None) -> bytes:
        return self.frame


DONE = Event(b"data: [DONE]\n\n")


def data(payload: bytes) -> Event:
    """One ``data:`` event."""
    return Event(b"data: " + payload + b"\n\n")


class _Live:
    """What shutdown needs to end one relay: its pending read, and why it ended."""

    __slots__ = ("ended", "pending")

    def __init__(self) -> None:
        self.pending: asyncio.Future[bytes] | None = None
        self.ended: APIError | None = None

    def end(self, error: APIError) -> None:
        self.ended = error
        if self.pending is not None:
            self.pending.cancel()


class LiveStreams:
    """The relays in progress, so that a shutdown past its drain time ends them cleanly.

    It holds small state objects, never the generators: holding a generator would keep
    it (and its upstream request) alive after the client left.
    """

    def __init__(self) -> None:
        self._live: set[_Live] = set()

    def __len__(self) -> int:
        return len(self._live)

    def end_all(self, error: APIError) -> int:
        """Make every open stream send ``error`` and ``[DONE]``; returns how many."""
        live = list(self._live)
        for state in live:
            state.end(error)
        return len(live)


async def relay(
    stream: ReplyStream, ping_s: float, live: LiveStreams
) -> AsyncGenerator[Event | None, None]:
    """Yield the stream's payloads as SSE events, then ``[DONE]``; always close it."""
    chunks = stream.__aiter__()
    state = _Live()
    live._live.add(state)
    try:
        while True:
            if state.ended is not None:
                raise state.ended
            pending = state.pending = asyncio.ensure_future(chunks.__anext__())
            while not (await asyncio.wait((pending,), timeout=ping_s))[0]:
                yield None
            state.pending = None
            if pending.cancelled() and state.ended is not None:
                raise state.ended
            try:
                payload = pending.result()
            except StopAsyncIteration:
                break
            yield data(payload)
    except APIError as exc:
        log.warning("stream_failed", error=type(exc).__name__, status=exc.status)
        yield data(orjson.dumps(exc.envelope()))
    except Exception:
        log.exception("stream_crashed")
        yield data(orjson.dumps(APIError("The stream failed unexpectedly.").envelope()))
    finally:
        live._live.discard(state)
        if state.pending is not None:
            state.pending.cancel()
            await asyncio.gather(state.pending, return_exceptions=True)
        await stream.aclose()
    yield DONE
