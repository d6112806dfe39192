"""Counting the tokens a request used, for keys with a ``tpm`` limit.

Plain replies carry ``usage``. Streams carry it only when the client asked
(``stream_options.include_usage``); for a metered key the appliance asks on the client's
behalf and drops that final usage chunk again if the client had not asked for it.
"""

from __future__ import annotations

from typing import Any

from appliance.limits import Limiter
from appliance.protocol import Usage, read_usage


class Meter:
    """Token accounting for one request of one limited key."""

    __slots__ = ("_limiter", "hide_usage", "key", "tokens")

    def __init__(self, limiter: Limiter, key: str) -> None:
        self._limiter = limiter
        self.key = key
        self.tokens = 0
        self.hide_usage = False

    def ask_for_usage(self, body: dict[str, Any]) -> dict[str, Any]:
        """The stream request to send: with ``include_usage`` on."""
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            return body
        self.hide_usage = True
        return {**body, "stream_options": {**options, "include_usage": True}}

    def reply(self, usage: Usage | None) -> None:
        """Count a plain reply's usage."""
        if usage is not None:
            self.tokens += usage.total

    def chunk(self, payload: bytes) -> bytes | None:
        """Count a stream chunk's usage; returns what the client sees (None: nothing)."""
        usage = read_usage(payload)
        if usage is None:
            if self.hide_usage:
                # With include_usage every chunk says "usage":null; the client did not
                # ask. Quotes inside JSON strings are escaped, so this is always a key.
                return payload.replace(b',"usage":null', b"")
            return payload
        self.tokens += usage.total
        return None if self.hide_usage else payload

    async def settle(self) -> None:
        """Record the tokens against the key."""
        await self._limiter.spend(self.key, self.tokens)


async def settle(req: Any, usage: Usage | None) -> None:
    """Count a plain reply against the request's key, if that key has a token limit."""
    meter: Meter | None = getattr(req.context, "meter", None)
    if meter is not None:
        meter.reply(usage)
        await meter.settle()
