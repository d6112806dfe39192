"""The usage of one request's model call, as far as it is known (see :mod:`.metering`)."""

from __future__ import annotations

import sys
from typing import Any

from appliance.errors import APIError
from appliance.telemetry.genai import chunk_model, reply_model
from appliance.wire.openai.assemble import Fold
from appliance.wire.usage import UNPARSED, StreamTally, Usage, estimate, of_reply, read_reply

NOTHING = Usage(0, 0, 0)


class Charge:
    """The usage of one request's model call, as far as it is known.

    Attributes:
        model: The model as the client named it.
        request: The request body sent to the model (for estimates).
        usage: A plain reply's usage, once it came.
        body: A plain reply's body, once it came (the model's own, before any translation).
        tally: A stream's tally, once it began.
        failure: The error that ended a stream, if one did.
        streamed: Whether the client asked for a stream.
        keep_bytes: The request log keeps this call's reply up to this size (0: not kept).
    """

    __slots__ = ("body", "failure", "keep_bytes", "model", "request", "streamed", "tally", "usage")

    def __init__(self, model: str, request: dict[str, Any]) -> None:
        self.model = model
        self.request = request
        self.streamed = bool(request.get("stream"))
        self.usage: Usage | None = None
        self.body: bytes | None = None
        self.tally: StreamTally | None = None
        self.failure: APIError | None = None
        self.keep_bytes = 0

    def keep(self, max_bytes: int) -> None:
        """Keep the reply for the request log (see :mod:`appliance.accounting.requestlog`)."""
        self.keep_bytes = max_bytes

    def reply(self, body: bytes) -> Usage:
        """Read a plain reply's usage (charged when the request ends)."""
        self.body = body
        self.usage = of_reply(body, self.request)
        return self.usage

    def stream(self, client_asked: bool, kind: type[StreamTally] = StreamTally) -> StreamTally:
        """The tally of this request's stream (see :class:`StreamTally`)."""
        self.tally = kind(client_asked)
        if self.keep_bytes:
            self.tally.keep(Fold(), self.keep_bytes)
        return self.tally

    async def settle(self, failure: APIError | None = None) -> None:
        """The stream is over; ``failure`` ended it, if anything did."""
        self.failure = failure

    def used(self, client_left: bool) -> Usage:
        """What the model produced: the reply's usage, what a stream relayed; for a call
        its client left before anything came, the prompt it read (estimated); for one
        that failed at the model, nothing."""
        if self.usage is not None:
            return self.usage
        if self.tally is not None:
            return self.tally.result(self.request)
        if client_left:
            return estimate(self.request, 0)
        return NOTHING


class TracedCharge(Charge):
    """The charge of a call whose trace records: it also notes, for the model call's span,
    whether a reply came (:attr:`replied`: a plain reply, or a stream's first chunk) and
    the model it names (:attr:`response_model`). Read where the usage is read, parsing
    nothing twice: a plain reply as the usage read parsed it (:attr:`parsed`, kept for
    the span's captured content), or, one whose usage was read from its end
    (``UNPARSED``), as :func:`~appliance.telemetry.genai.reply_model` reads it; a
    stream's first chunk as the tally parsed it (:class:`_FirstChunk`). An untraced call
    is a plain :class:`Charge` and pays for none of it.
    """

    __slots__ = ("first", "parsed", "replied", "response_model")

    def __init__(self, model: str, request: dict[str, Any]) -> None:
        super().__init__(model, request)
        self.replied = False
        self.response_model: str | None = None
        self.first: _FirstChunk | None = None
        self.parsed: Any = UNPARSED

    def reply(self, body: bytes) -> Usage:
        self.body = body
        self.usage, self.parsed = read_reply(body, self.request)  # Charge.reply's, and its parse
        self.replied = True
        self.response_model = reply_model(body, self.parsed)
        return self.usage

    def stream(self, client_asked: bool, kind: type[StreamTally] = StreamTally) -> StreamTally:
        tally = super().stream(client_asked, kind)
        self.first = _FirstChunk(self, tally)
        return tally

    async def settle(self, failure: APIError | None = None) -> None:
        if self.first is not None:  # no chunk came: the tally's fold is its own again
            self.first.done()
        await super().settle(failure)


class _FirstChunk:
    """Takes a stream's first parsed chunk as the tally's fold (:meth:`StreamTally.keep`),
    notes the model it names, and gives the tally its own fold back (the request log's,
    if it keeps the reply) with that chunk: one call per stream, no parse of its own."""

    __slots__ = ("charge", "fold", "fold_chars", "tally")

    def __init__(self, charge: TracedCharge, tally: StreamTally) -> None:
        self.charge = charge
        self.tally = tally
        self.fold, self.fold_chars = tally.kept, tally.keep_chars
        tally.keep(self, sys.maxsize)

    def add(self, chunk: Any) -> None:
        self.done()
        charge = self.charge
        charge.replied = True
        charge.response_model = chunk_model(chunk)
        tally, fold = self.tally, self.fold
        if fold is not None and tally.chars <= self.fold_chars:
            fold.add(chunk)

    def done(self) -> None:
        self.tally.kept, self.tally.keep_chars = self.fold, self.fold_chars
        self.charge.first = None
