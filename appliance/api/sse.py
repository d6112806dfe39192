"""Relaying a worker's stream as server-sent events.

While the next chunk is slow to come, this yields ``None`` every ``ping_s`` (Falcon sends
``: ping``, which OpenAI clients ignore, and which keeps proxies from timing out). A
client that leaves is reported by the access layer through :meth:`Relay.client_gone`,
which stops reading from the worker at once. Errors never escape: once streaming has
begun they become an ``{"error": ...}`` event followed by ``[DONE]``, which the openai
SDK raises.

The relay owns the worker's stream from the moment it exists: :meth:`Relay.aclose`
closes it (freeing the worker's slot and charging the request) whether or not the event
generator ever ran, since Falcon never starts it for a client that left first.

How payloads become events is the :class:`Framing`'s: OpenAI's by default (each payload a
``data:`` line, then ``[DONE]``); another API family (Anthropic's Messages) brings its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Protocol

import orjson
import structlog

from appliance.errors import APIError
from appliance.metrics import StreamStats
from appliance.usage import StreamTally
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
    """One ``data:`` event; a payload of several lines (pretty-printed JSON) stays one event."""
    if b"\n" in payload:
        payload = payload.replace(b"\r\n", b"\n").replace(b"\n", b"\ndata: ")
    return Event(b"data: " + payload + b"\n\n")


class Framing(Protocol):
    """How a worker's payloads reach the client as SSE events."""

    def chunk(self, payload: bytes) -> list[Event]:
        """The events for one payload (as shown after the tally)."""
        ...

    def close(self, error: APIError | None) -> list[Event]:
        """The events that end the stream: after the last payload, or after ``error``."""
        ...


class OpenAIFraming:
    """OpenAI's framing: each payload one ``data:`` event; errors as ``{"error": ...}``."""

    def chunk(self, payload: bytes) -> list[Event]:
        return [data(payload)]

    def close(self, error: APIError | None) -> list[Event]:
        if error is None:
            return [DONE]
        return [data(orjson.dumps(error.envelope())), DONE]


class Endable(Protocol):
    def end(self, error: APIError) -> None: ...


class LiveStreams:
    """The relays in progress, and the requests not yet answered, so that a shutdown past
    its drain time ends them cleanly.

    It holds the relays, never their generators: a held generator would stay alive (and
    its upstream request open) after the client left.
    """

    def __init__(self) -> None:
        self.relays: set[Relay] = set()
        self.unanswered: set[Endable] = set()  # requests whose response has not begun

    def __len__(self) -> int:
        return len(self.relays)

    def end_all(self, error: APIError) -> int:
        """Make every open stream send ``error`` and ``[DONE]``; returns how many."""
        relays = list(self.relays)
        for relay in relays:
            relay.end(error)
        return len(relays)

    def answer_all(self, error: APIError) -> int:
        """Answer every request whose response has not begun with ``error``; how many."""
        waiting = list(self.unanswered)
        for request in waiting:
            request.end(error)
        return len(waiting)


class Relay:
    """One worker stream on its way to one client.

    Args:
        stream: The worker's stream; the relay closes it.
        ping_s: Seconds between SSE pings while the next chunk is slow.
        live: The registry of open relays (for shutdown).
        tally: Reads usage from the chunks and hides what the client did not ask for.
        stats: Time-to-first-token metrics.
        on_close: Awaited once when the stream is closed (charging the request), with the
            error that ended it, if one did.
        framing: How payloads and errors become events; OpenAI's by default.
    """

    __slots__ = (
        "_closed",
        "_ended",
        "_error",
        "_failure",
        "_pending",
        "framing",
        "live",
        "on_close",
        "ping_s",
        "stats",
        "stream",
        "tally",
    )

    def __init__(
        self,
        stream: ReplyStream,
        ping_s: float,
        live: LiveStreams,
        tally: StreamTally | None = None,
        stats: StreamStats | None = None,
        on_close: Callable[[APIError | None], Awaitable[None]] | None = None,
        framing: Framing | None = None,
    ) -> None:
        self.stream = stream
        self.ping_s = ping_s
        self.live = live
        self.tally = tally
        self.stats = stats
        self.on_close = on_close
        self.framing: Framing = framing or OpenAIFraming()
        self._pending: asyncio.Future[bytes] | None = None
        self._ended = False
        self._closed = False
        self._error: APIError | None = None
        self._failure: APIError | None = None

    def end(self, error: APIError | None = None) -> None:
        """Stop relaying: with ``error`` the client gets it as an event; without, nothing."""
        self._ended, self._error = True, error
        if self._pending is not None:
            self._pending.cancel()

    def client_gone(self) -> None:
        """The client left: stop reading from the worker now."""
        self.end(None)

    async def aclose(self) -> None:
        """Close the worker's stream and charge the request; only the first call acts."""
        if self._closed:
            return
        self._closed = True
        self.live.relays.discard(self)
        try:
            if self._pending is not None:
                self._pending.cancel()
                await asyncio.gather(self._pending, return_exceptions=True)
            await self.stream.aclose()
        finally:
            if self.on_close is not None:
                await self.on_close(self._failure)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        """The stream's payloads as SSE events, then the end; the stream is always closed."""
        if self._closed:
            return
        chunks = self.stream.__aiter__()
        self.live.relays.add(self)
        failure: APIError | None = None
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
                    if self.tally is not None:
                        self.tally.finished()
                    break
                if self.stats is not None:
                    self.stats.chunk(time.perf_counter())
                if self.tally is not None:
                    shown = self.tally.chunk(payload)
                    if shown is None:
                        continue
                    payload = shown
                for event in self.framing.chunk(payload):
                    yield event
            if self._error is not None:
                raise self._error
            if self._ended:
                return
        except APIError as exc:
            log.warning("stream_failed", error=type(exc).__name__, status=exc.status)
            failure = self._failure = exc
        except Exception:
            log.exception("stream_crashed")
            failure = self._failure = APIError("The stream failed unexpectedly.")
        finally:
            await self.aclose()
        for event in self.framing.close(failure):
            yield event
