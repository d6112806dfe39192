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


async def relay(stream: ReplyStream, ping_s: float) -> AsyncGenerator[Event | None, None]:
    """Yield the stream's payloads as SSE events, then ``[DONE]``; always close it."""
    chunks = stream.__aiter__()
    pending: asyncio.Future[bytes] | None = None
    try:
        while True:
            pending = asyncio.ensure_future(chunks.__anext__())
            while not (await asyncio.wait((pending,), timeout=ping_s))[0]:
                yield None
            try:
                payload = pending.result()
            except StopAsyncIteration:
                break
            finally:
                pending = None
            yield data(payload)
    except APIError as exc:
        log.warning("stream_failed", error=type(exc).__name__, status=exc.status)
        yield data(orjson.dumps(exc.envelope()))
    except Exception:
        log.exception("stream_crashed")
        yield data(orjson.dumps(APIError("The stream failed unexpectedly.").envelope()))
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
        await stream.aclose()
    yield DONE
