"""Relaying a worker's stream as server-sent events.

The relay reads the worker's stream in the task that sends the response: a read's worth
of payloads at a time (an upstream's :meth:`~appliance.backends.upstream_sse.Payloads.batch`;
a stream that offers payloads one by one is read ahead by a :class:`Prefetch`), and what
one read brought goes out as one write (an upstream that sends a burst costs one hand-off
to the server, not one per token). No task, queue or timer per read: a watchdog fed as
each read begins (:class:`~appliance.runtime.watchdog.Watchdog`, one timer per stream)
wakes a wait for the next read that lasted ``ping_s``, and the relay then yields ``None``
(sent as the comment ``: ping``, which OpenAI clients ignore, and which keeps proxies from
timing out). A client that leaves is reported by the access layer through
:meth:`Relay.client_gone`, which interrupts that wait at once. Errors never escape: once
streaming has begun they become an ``{"error": ...}`` event followed by ``[DONE]``,
which the openai SDK raises.

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

import structlog

from appliance.backends.base import ReplyStream
from appliance.clip import clip
from appliance.errors import APIError
from appliance.http.prefetch import Prefetch
from appliance.runtime.metrics import StreamStats
from appliance.runtime.watchdog import Watchdog
from appliance.wire.sse import Framing, OpenAIFraming
from appliance.wire.usage import StreamTally

log = structlog.get_logger("appliance.stream")


class Event:
    """Pre-framed SSE bytes, sent as they are."""

    __slots__ = ("frame",)

    def __init__(self, frame: bytes) -> None:
        self.frame = frame

    def serialize(self, handler: Any = None) -> bytes:
        return self.frame


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
        self.sending: set[Any] = set()  # exchanges waiting for a client to take a send

    def __len__(self) -> int:
        return len(self.relays)

    def end_all(self, error: APIError) -> int:
        """Make every open stream send ``error`` and ``[DONE]``; returns how many."""
        relays = list(self.relays)
        for relay in relays:
            relay.end(error)
        for stuck in list(self.sending):  # a client not reading: its send would never end
            stuck.abandon()
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
        "_cancelling",
        "_closed",
        "_ended",
        "_error",
        "_failure",
        "_pinger",
        "_prefetch",
        "_reading",
        "_task",
        "_woken",
        "framing",
        "live",
        "on_close",
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
        self.live = live
        self.tally = tally
        self.stats = stats
        self.on_close = on_close
        self.framing: Framing = framing or OpenAIFraming()
        self._prefetch: Prefetch | None = None
        self._task: asyncio.Task[Any] | None = None  # the one sending the events
        self._reading = False  # the events wait for the worker's next read
        self._woken = False  # and were woken (for a ping, or to end)
        self._pinger = Watchdog(self._wake, ping_s)  # fed as each read begins
        self._cancelling = 0
        self._ended = False
        self._closed = False
        self._error: APIError | None = None
        self._failure: APIError | None = None

    def end(self, error: APIError | None = None) -> None:
        """Stop relaying: with ``error`` the client gets it as an event; without, nothing."""
        self._ended, self._error = True, error
        if self._prefetch is not None:
            self._prefetch.stop()
        self._wake()

    def client_gone(self) -> None:
        """The client left: stop reading from the worker now."""
        self.end(None)

    async def aclose(self) -> None:
        """Close the worker's stream and charge the request; only the first call acts."""
        if self._closed:
            return
        self._closed = True
        self.live.relays.discard(self)
        self._pinger.close()
        try:
            try:
                if self._prefetch is not None:
                    await self._prefetch.aclose()
            finally:  # a second cancellation on the way must not keep the slot
                await self.stream.aclose()
        finally:
            if self.on_close is not None:
                await self.on_close(self._failure)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        """The stream's payloads as SSE events, then the end; the stream is always closed.

        Each read's payloads go out as one write, and the frames that end the stream in
        the same write as the last payloads when the read that brought those also ended
        the stream (a burst's last read: one write, not two)."""
        if self._closed:
            return
        self.live.relays.add(self)
        source: Any = aiter(self.stream)
        if getattr(source, "batch", None) is None:  # payload by payload: read ahead
            source = self._prefetch = Prefetch(source)
        batch = source.batch
        feed = self._pinger.feed
        failure: APIError | None = None
        last = b""  # the last payloads' frames, held to go out with the end
        try:
            while not self._ended:
                # The task that waits (each ``anext`` may come from another) is the one a
                # wake cancels: the server's, as a rule.
                task = self._task = asyncio.current_task()
                assert task is not None
                self._cancelling = task.cancelling()
                feed()  # a wait that lasts ping_s is woken, to ping
                self._reading = True
                try:
                    items = await batch()
                except StopAsyncIteration:
                    if self.tally is not None:
                        self.tally.finished()
                    break
                except asyncio.CancelledError:
                    if not self._woken or task.uncancel() > self._cancelling:
                        raise
                    self._woken = False
                    if not self._ended:
                        yield None  # nothing came for ping_s
                    continue
                finally:
                    self._reading = False
                if self.stats is not None:
                    self.stats.chunk(time.perf_counter())
                frames, error = self._frames(items)
                if error is not None:
                    last = frames
                    raise error
                if source.ended:
                    last = frames
                elif frames:
                    yield Event(frames)
            if self._error is not None:
                last = b""
                raise self._error
            if self._ended:
                return
        except APIError as exc:
            log.warning(
                "stream_failed",
                error=type(exc).__name__,
                status=exc.status,
                code=exc.code,
                message=clip(exc.message),
            )
            failure = self._failure = exc
        except Exception:
            log.exception("stream_crashed")
            failure = self._failure = APIError("The stream failed unexpectedly.")
        finally:
            await self.aclose()
        if failure is not None and self.stats is not None:
            self.stats.failed(type(failure).__name__)
        end = last + b"".join(self.framing.close(failure))
        if end:
            yield Event(end)

    def _wake(self) -> None:
        """Interrupt the events' wait for the worker's next read, if they wait (they are
        suspended there, so that is where the cancellation lands; they take it back, as
        ``asyncio.timeout`` does). The pinger calls it when that wait lasted ``ping_s``."""
        if self._reading and not self._woken and self._task is not None:
            self._woken = True
            self._task.cancel()

    def _frames(self, payloads: list[bytes]) -> tuple[bytes, Exception | None]:
        """The events for one read's payloads, and the error that ends the stream among
        them, if there is one (after the payloads before it)."""
        frames: list[bytes] = []
        tally, chunk = self.tally, self.framing.chunk
        for payload in payloads:
            if self._ended:
                break
            if tally is not None:
                try:
                    shown = tally.chunk(payload)
                except APIError as exc:  # a chunk that is not JSON: after what came before
                    return b"".join(frames), exc
                if shown is None:
                    continue
                payload = shown
            frames.extend(chunk(payload))
        return b"".join(frames), None
