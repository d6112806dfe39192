"""Server-sent events as bytes, and the framing each API family gives a stream.

A worker's stream is a sequence of JSON payloads; each API family frames them for its
clients (:class:`Framing`): OpenAI's chat as plain ``data:`` events ending ``[DONE]``
(:class:`OpenAIFraming`), Responses and Anthropic's Messages as named events
(:mod:`appliance.wire.responses.framing`, :mod:`appliance.wire.anthropic.framing`). The
HTTP relay sends the frames as they are.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from appliance.errors import APIError

DONE = b"data: [DONE]\n\n"


def data(payload: bytes) -> bytes:
    """One ``data:`` event; a payload of several lines (pretty-printed JSON) stays one event."""
    if b"\n" in payload:
        payload = payload.replace(b"\r\n", b"\n").replace(b"\n", b"\ndata: ")
    return b"data: " + payload + b"\n\n"


def named(kind: str, payload: bytes) -> bytes:
    """One event with an ``event:`` line (Responses, Anthropic)."""
    return b"event: " + kind.encode() + b"\n" + data(payload)


class Framing(Protocol):
    """How a worker's payloads reach the client as SSE frames."""

    def chunk(self, payload: bytes) -> list[bytes]:
        """The frames for one payload (as shown after the tally)."""
        ...

    def close(self, error: APIError | None) -> list[bytes]:
        """The frames that end the stream: after the last payload, or after ``error``."""
        ...


class OpenAIFraming:
    """OpenAI's framing: each payload one ``data:`` event; errors as ``{"error": ...}``."""

    def chunk(self, payload: bytes) -> list[bytes]:
        return [data(payload)]

    def close(self, error: APIError | None) -> list[bytes]:
        if error is None:
            return [DONE]
        return [data(orjson.dumps(error.envelope())), DONE]
