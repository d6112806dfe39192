"""Relaying a worker's stream as server-sent events.

While the next chunk is slow to come, this yields ``None`` every ``ping_s`` (Falcon sends
``: ping``, which OpenAI clients ignore, and which keeps proxies from timing out). A
client that leaves is reported by the access layer through :meth:`Relay.client_gone`,
which stops reading from the worker at once. Errors never escape: once streaming has
begun they become an ``{"error": ...}`` event followed by ``[DONE]``, which the openai
SDK raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any

import orjson
import structlog

from appliance.api.metering import Meter
from appliance.errors import APIError
from appliance.metrics import StreamStats
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


class LiveStreams:
    """The relays in progress, so that a shutdown past its drain time ends them cleanly.

    It holds the relays, never their generators: a held generator would stay alive (and
    its upstream request open) after the client left.
    """

    def __init__(self) -> None:
        self.relays: set[Relay] = set()

    def __len__(self) -> int:
        return len(self.relays)

    def end_all(self, error: APIError) -> int:
        """Make every open stream send ``error`` and ``[DONE]``; returns how many."""
        relays = list(self.relays)
        for relay in relays:
            relay.end(error)
        return len(relays)


class Relay:
    """One worker stream on its way to one client."""

    __slots__ = ("_ended", "_error", "_pending", "live", "meter", "ping_s", "stats", "stream")

    def __init__(
        self,
        stream: ReplyStream,
        ping_s: float,
        live: LiveStreams,
        meter: Meter | None = None,
        stats: StreamStats | None = None,
    ) -> None:
        self.stream = stream
        self.ping_s = ping_s
        self.live = live
        self.meter = meter
        self.stats = stats
        self._pending: asyncio.Future[bytes] | None = None
        self._ended = False
        self._error: APIError | None = None

    def end(self, error: APIError | None = None) -> None:
        """Stop relaying: with ``error`` the client gets it as an event; without, nothing."""
        self._ended, self._error = True, error
        if self._pending is not None:
            self._pending.cancel()

    def client_gone(self) -> None:
        """The client left: stop reading from the worker now."""
        self.end(None)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        """The stream's payloads as SSE events, then ``[DONE]``; the stream is always closed."""
        chunks = self.stream.__aiter__()
        self.live.relays.add(self)
        try:
            while not self._ended:
                pending = self._pending = asyncio.ensure_future(chunks.__anext__())
                while not (await asyncio.wait((pending,), timeout=self.ping_s))[0]:
                    yield None
                self._pending = None
                if pending.cancelled():
                    break
                try:
                    payload = pending.result()
                except StopAsyncIteration:
                    break
                if self.stats is not None:
                    self.stats.chunk(payload, time.perf_counter())
                if self.meter is not None:
                    shown = self.meter.chunk(payload)
                    if shown is None:
                        continue
                    payload = shown
                yield data(payload)
            if self._error is not None:
                raise self._error
            if self._ended:
                return
        except APIError as exc:
            log.warning("stream_failed", error=type(exc).__name__, status=exc.status)
            yield data(orjson.dumps(exc.envelope()))
        except Exception:
            log.exception("stream_crashed")
            yield data(orjson.dumps(APIError("The stream failed unexpectedly.").envelope()))
        finally:
            self.live.relays.discard(self)
            if self._pending is not None:
                self._pending.cancel()
                await asyncio.gather(self._pending, return_exceptions=True)
            await self.stream.aclose()
            if self.meter is not None:
                await self.meter.settle()
            if self.stats is not None:
                self.stats.finish()
        yield DONE
