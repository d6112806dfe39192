"""Relaying a worker's stream as server-sent events.

One task per stream reads the worker's payloads into a small bounded queue (a slow client
holds the worker back, as before: nothing piles up); the events go out as they come, and
payloads that are already there when the client's side is ready go out together as one
write (an upstream that sends a burst costs one hand-off to the server, not one per
token). While the next chunk is slow to come, this yields ``None`` every ``ping_s``
(sent as the comment ``: ping``, which OpenAI clients ignore, and which keeps proxies from
timing out). A client that leaves is reported by the access layer through
:meth:`Relay.client_gone`, which stops reading from the worker at once. Errors never
escape: once streaming has begun they become an ``{"error": ...}`` event followed by
``[DONE]``, which the openai SDK raises.

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
from typing import Any, Protocol, cast

import structlog

from appliance.backends.base import ReplyStream
from appliance.clip import clip
from appliance.errors import APIError
from appliance.runtime.metrics import StreamStats
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


_QUEUE = 32  # reads (or payloads) read ahead of the client at most
_END = object()  # the reader's last item after the stream's last payload


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
        "_closed",
        "_ended",
        "_error",
        "_failure",
        "_queue",
        "_reader",
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
        self._queue: asyncio.Queue[object] = asyncio.Queue(_QUEUE)
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._closed = False
        self._error: APIError | None = None
        self._failure: APIError | None = None

    def end(self, error: APIError | None = None) -> None:
        """Stop relaying: with ``error`` the client gets it as an event; without, nothing."""
        self._ended, self._error = True, error
        if self._reader is not None:
            self._reader.cancel()
        if not self._queue.full():
            self._queue.put_nowait(_END)  # wakes the relay if it waits

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
            if self._reader is not None and not self._reader.done():
                self._reader.cancel()  # the reader never raises: it queues what it met
                await asyncio.gather(self._reader, return_exceptions=True)
            await self.stream.aclose()
        finally:
            if self.on_close is not None:
                await self.on_close(self._failure)

    async def events(self) -> AsyncGenerator[Event | None, None]:
        """The stream's payloads as SSE events, then the end; the stream is always closed.

        The frames that end the stream go out in the same write as the last payloads
        when those were there together (a burst's last read: one write, not two)."""
        if self._closed:
            return
        self.live.relays.add(self)
        self._reader = asyncio.ensure_future(self._read())
        failure: APIError | None = None
        last = b""  # the last payloads' frames, held to go out with the end
        queue = self._queue
        try:
            done = False
            while not done and not self._ended:
                if queue.empty():
                    try:
                        async with asyncio.timeout(self.ping_s):
                            items = [await queue.get()]
                    except TimeoutError:
                        yield None
                        continue
                else:
                    items = []
                while not queue.empty():
                    items.append(queue.get_nowait())
                frames, done, error = self._frames(items)
                if error is not None:
                    if frames:
                        yield Event(frames)
                    raise error
                if done:
                    last = frames
                elif frames:
                    yield Event(frames)
            if self._error is not None:
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

    def _frames(self, items: list[object]) -> tuple[bytes, bool, Exception | None]:
        """The events for payloads read so far (single payloads, or a read's worth in a
        list), whether the stream's end is among them, and the error the worker's stream
        raised, if it did (after the payloads before it)."""
        frames: list[bytes] = []
        tally, chunk, stats = self.tally, self.framing.chunk, self.stats
        for item in items:
            if self._ended:
                break
            if item is _END:
                if tally is not None:
                    tally.finished()
                return b"".join(frames), True, None
            if isinstance(item, Exception):
                return b"".join(frames), True, item
            if stats is not None:
                stats.chunk(time.perf_counter())
            for payload in cast(list[bytes], item) if type(item) is list else (item,):
                if tally is not None:
                    try:
                        shown = tally.chunk(cast(bytes, payload))
                    except APIError as exc:  # a chunk that is not JSON: after what came before
                        return b"".join(frames), True, exc
                    if shown is None:
                        continue
                    payload = shown
                frames.extend(chunk(cast(bytes, payload)))
        return b"".join(frames), False, None

    async def _read(self) -> None:
        """Read the worker's payloads into the queue, then the end (or the error): a
        read's worth at a time where the stream offers it (``batch()``, see
        :class:`appliance.backends.upstream_sse.Payloads`), else one by one."""
        queue = self._queue
        try:
            payloads = aiter(self.stream)
            batch = getattr(payloads, "batch", None)
            if batch is None:
                async for payload in payloads:
                    await queue.put(payload)
            else:
                while True:
                    try:
                        items = await batch()
                    except StopAsyncIteration:
                        break
                    await queue.put(items)
            await queue.put(_END)
        except Exception as exc:  # the relay raises it, in order, after what came before
            await queue.put(exc)
