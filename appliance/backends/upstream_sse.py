"""An upstream's server-sent events, read as the JSON payloads they carry.

Upstreams differ in how they write SSE: LF, CRLF or (rarely, but legal) CR line ends;
``data:`` with or without a space; payloads over several ``data:`` lines; comments,
``event:`` and ``id:`` lines; events split anywhere across network reads. All of it is
read here, per read rather than per line (one await per read).

What a payload may be is checked here too, so that every API the appliance speaks (chat,
Responses, Messages) sees the same stream:

- An empty payload (``data:`` alone) is no event (as the SSE standard says); one that is
  not a JSON object (``data: keep-alive``) is skipped and logged once per stream.
- An error the upstream reports inside its stream raises :class:`UpstreamStreamError`
  with its message, type and code: OpenAI's ``{"error": {...}}`` (with or without
  ``choices``, as OpenRouter sends it), TGI's ``{"error": "...", "error_type": ...}``,
  vLLM's ``{"object": "error", ...}``, llama.cpp's ``error:`` line, a bare JSON error
  line outside any field, and an event named ``error`` (``event: error``) whatever its
  payload (``{"message": ..., "code": 529}``, or plain text). A Responses stream's own
  ``error`` or ``response.failed`` event is relayed as it is, and the stream then fails
  at its end (logged and recorded).
- The stream ends at ``[DONE]``. A body that ends without it counts as finished only if
  the reply did finish: its last payload is a Responses ``response.completed``-like event
  or carries a ``finish_reason`` (with ``n`` asked for: every choice that came finished),
  or it is the usage chunk right after such a payload. A server that omits ``[DONE]`` is
  served; a stream cut short without a word raises :class:`UpstreamConnectionError`
  instead of passing for a whole reply.
- An event over :data:`MAX_EVENT` bytes (on one line or many) ends the stream with an
  error: an upstream cannot make the appliance hold an event of any size.
- What the upstream reports of an error reaches the client scrubbed of its worker's
  secrets (its :class:`~.scrub.Scrubber`): the errors raised, and the error events relayed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from appliance.backends.scrub import Scrubber
from appliance.backends.upstream_errors import (
    error_in,
    parse,
    raise_error_line,
    raise_named_error,
)
from appliance.errors import APIError, UpstreamConnectionError, UpstreamStreamError

log = structlog.get_logger("appliance.upstream")

_NO_SECRETS = Scrubber()
MAX_EVENT = 2 * 1024 * 1024  # one SSE event (one chunk) may be this long, over all its lines

# The last event of a Responses stream, however it ended; and those that say it failed.
_RESPONSE_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


def payloads(
    read: Callable[[], Awaitable[bytes]], choices: int = 1, scrub: Scrubber | None = None
) -> Payloads:
    """The JSON payloads of the SSE body that ``read`` returns piece by piece (``b""`` at
    its end), until ``[DONE]``; raises as the module says. ``choices``: how many a chat
    or completion reply has (``n``); ``scrub``: the worker's secrets' scrubber."""
    return Payloads(read, choices, scrub or _NO_SECRETS)


class Payloads:
    """An SSE body's payloads: one at a time (``async for``), or all that one network read
    completed at once (:meth:`batch`, which the relay uses: one hand-off per read, not one
    per payload). Nothing is parsed here but what must be: a payload that may report an
    error, and the last ones when a body ends without ``[DONE]``."""

    __slots__ = (
        "_data",
        "_ending",
        "_failed",
        "_finished",
        "_held",
        "_lines",
        "_named_error",
        "_read",
        "_scrub",
        "_size",
    )

    def __init__(self, read: Callable[[], Awaitable[bytes]], choices: int, scrub: Scrubber) -> None:
        self._read = read
        self._scrub = scrub
        self._lines = _Lines()
        self._ending = _Ending(choices)
        self._data: list[bytes] = []  # the data lines of the event being read
        self._size = 0  # their length
        self._named_error = False  # the event being read is named ``error``
        self._held: list[bytes] = []  # payloads read but not yet taken one at a time
        self._failed: Exception | None = None  # raised after the payloads before it
        self._finished = False

    def __aiter__(self) -> Payloads:
        return self

    @property
    def ended(self) -> bool:
        """Whether the next :meth:`batch` raises at once (the end, or the stream's error):
        the last read brought the stream's end with its payloads."""
        return self._finished or self._failed is not None

    async def __anext__(self) -> bytes:
        while not self._held:
            self._held = await self.batch()
            self._held.reverse()
        return self._held.pop()

    async def batch(self) -> list[bytes]:
        """The payloads of the next read that completes any (never an empty list); raises
        ``StopAsyncIteration`` at the end, or the stream's error after what came before it.
        It may be cancelled while it waits for a read, and called again: nothing is lost."""
        while True:
            if self._failed is not None:
                failed, self._failed = self._failed, None
                self._finished = True
                raise failed
            if self._finished:
                raise StopAsyncIteration
            out: list[bytes] = []
            try:
                self._feed(await self._read(), out)
            except Exception as exc:  # sent after the payloads the same read completed
                if isinstance(exc, APIError):
                    self._scrub.error(exc)  # the upstream's words, to the client
                if not out:
                    self._finished = True
                    raise
                self._failed = exc
            if out:
                return out

    def _feed(self, chunk: bytes, out: list[bytes]) -> None:
        """Read one piece of the body: its complete payloads into ``out``; at ``[DONE]`` or
        at the body's end (``b""``), check how the stream ended and finish."""
        end = not chunk
        data = self._data
        size = self._size  # of the event being read, in this local until the read is done
        for line in self._lines.feed(chunk):
            if not line:  # a blank line: the event's end
                if data:
                    payload = data[0] if len(data) == 1 else b"\n".join(data)
                    data.clear()
                    size = 0
                    if self._named_error:
                        raise_named_error(payload)
                    self._payload(payload, end, out)
                self._named_error = False
                continue
            if line.startswith(b"data:"):
                payload = line[6:] if line[5:6] == b" " else line[5:]  # one space, no more
                if len(payload) < 16 and payload.strip() == b"[DONE]":
                    if data:  # [DONE] right after an event's lines, without a blank
                        joined = data[0] if len(data) == 1 else b"\n".join(data)
                        data.clear()
                        self._payload(joined, end, out)
                    self._size = 0
                    self._finished = True
                    self._ending.check(done=True)
                    return
                data.append(payload)
                size += len(payload) + 1  # with the newline that joins them
                if size > MAX_EVENT:  # one event, however many lines it takes
                    raise UpstreamConnectionError("The upstream sent an oversized chunk")
            elif line.startswith(b"event:"):
                self._named_error = line[6:].strip() == b"error"
            elif line.startswith((b"error:", b"{")):
                raise_error_line(line)
        self._size = size
        if end:
            self._finished = True
            self._ending.check(done=False)

    def _payload(self, payload: bytes, end: bool, out: list[bytes]) -> None:
        """One event's payload: into ``out`` if it is one (see the module's rules)."""
        if payload[:1] != b"{" and payload.lstrip()[:1] != b"{":
            if not payload.strip():
                return  # an empty event is no event
            if not self._ending.skipped:
                self._ending.skipped = True
                start = payload[:64].decode(errors="replace")
                log.warning("upstream_sent_non_json", start=start, size=len(payload))
            return
        if end and parse(payload) is None:
            return  # a last line cut off: not sent
        ending = self._ending
        if b'"error"' in payload or b"response.failed" in payload:
            payload = self._scrub.payload(payload)  # relayed as it came, if a failure
            ending.failure = error_in(payload) or ending.failure
        if ending.choices > 1:
            ending.seen(payload)
        else:  # as seen() keeps them, without the call
            ending.before, ending.last = ending.last, payload
        out.append(payload)


class _Lines:
    """Splits reads into lines at LF, CRLF or CR, however the reads cut them."""

    def __init__(self) -> None:
        self.held: list[bytes] = []  # a line not yet ended, in pieces (joined once)
        self.size = 0
        self.after_cr = False  # the last read ended in CR: an LF first in the next is its pair

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that ``chunk`` ends (all that is left, at the end: ``b""``); the
        body's end ends the last line and its event too."""
        end = not chunk
        if self.after_cr:
            self.after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self.after_cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines: list[bytes] = []
        if not end and b"\n" not in chunk:
            self.held.append(chunk)
            self.size += len(chunk)
        else:
            lines = (b"".join(self.held) + chunk if self.held else chunk).split(b"\n")
            rest = b"" if end else lines.pop()
            self.held, self.size = ([rest], len(rest)) if rest else ([], 0)
        if self.size > MAX_EVENT:
            raise UpstreamConnectionError("The upstream sent an oversized chunk")
        if end:
            lines.append(b"")
        return lines


class _Ending:
    """Whether the stream ended as a whole reply, from its last payloads."""

    def __init__(self, choices: int) -> None:
        self.choices = choices
        self.last = b""
        self.before = b""
        self.indexes: set[int] = set()  # choice indexes seen (with n > 1)
        self.finished: set[int] = set()  # and those that finished
        self.failure: UpstreamStreamError | None = None  # a Responses failure, relayed
        self.skipped = False  # a payload that is not JSON was skipped (logged once)

    def seen(self, payload: bytes) -> None:
        self.before, self.last = self.last, payload
        if self.choices > 1:  # parsed only then: n > 1 is rare, and this is the hot path
            obj = parse(payload)
            for choice in _choices(obj):
                index = choice.get("index", 0)
                if not isinstance(index, int):
                    continue
                self.indexes.add(index)
                if choice.get("finish_reason") is not None:
                    self.finished.add(index)

    def check(self, *, done: bool) -> None:
        """Raise unless the stream ended as a whole reply (``done``: at ``[DONE]``)."""
        if self.failure is not None:
            raise self.failure
        if done or self._whole():
            return
        raise UpstreamConnectionError("The upstream ended the stream before the reply was finished")

    def _whole(self) -> bool:
        """The last payload ends the reply, or is the usage chunk right after the end."""
        last = parse(self.last) if self.last else None
        if not isinstance(last, dict):
            return False
        if last.get("type") in _RESPONSE_ENDS:
            return True
        if self.choices > 1:  # every choice that came (an upstream may ignore ``n``)
            return bool(self.indexes) and self.finished >= self.indexes
        if _finishes(last):
            return True
        usage_chunk = not last.get("choices") and bool(last.get("usage"))
        return usage_chunk and _finishes(parse(self.before) if self.before else None)


def _finishes(obj: Any) -> bool:
    """Whether a chat or completion chunk finishes its choice."""
    return any(c.get("finish_reason") is not None for c in _choices(obj))


def _choices(obj: Any) -> list[dict[str, Any]]:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    return [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
