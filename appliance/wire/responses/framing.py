"""A stream as Responses events: translated from chat chunks, or an upstream's own relayed."""

from __future__ import annotations

from typing import Any

from appliance.errors import APIError
from appliance.wire import usage
from appliance.wire.responses.protocol import param_name
from appliance.wire.responses.stream import EventStream, frame, response_error
from appliance.wire.sse import data, named
from appliance.wire.usage import StreamTally


class TranslatedFraming:
    """A chat stream's chunks as Responses events (see :mod:`.stream`)."""

    def __init__(self, events: EventStream, tally: StreamTally, chat: dict[str, Any]) -> None:
        self.events = events
        self.tally = tally
        self.chat = chat

    def chunk(self, payload: bytes) -> list[bytes]:
        return self._frame(self.events.chunk(usage.parse(payload)))

    def close(self, error: APIError | None) -> list[bytes]:
        if error is None:
            return self._frame(self.events.end(self.tally.result(self.chat)))
        return self._frame(self.events.fail(error.code, error.message, param_name(error.param)))

    @staticmethod
    def _frame(events: list[dict[str, Any]]) -> list[bytes]:
        return [frame(events)] if events else []


class NativeFraming:
    """An upstream's own Responses events, relayed with their ``event:`` lines."""

    def __init__(self) -> None:
        self._next = 0  # the sequence number an error event of ours would take
        self._failed = False  # the upstream's own failure event went out
        self._response: dict[str, Any] | None = None  # as the last event showed it

    def chunk(self, payload: bytes) -> list[bytes]:
        obj = usage.parse(payload)
        kind = obj.get("type") if isinstance(obj, dict) else None
        seq = obj.get("sequence_number") if isinstance(obj, dict) else None
        if isinstance(seq, int):
            self._next = seq + 1
        if isinstance(obj, dict) and isinstance(obj.get("response"), dict):
            self._response = obj["response"]
        if not isinstance(kind, str) or not kind.isprintable():
            return [data(payload)]
        if kind in ("error", "response.failed"):
            self._failed = True
        return [named(kind, payload)]

    def close(self, error: APIError | None) -> list[bytes]:
        if error is None or self._failed:
            return []  # the client has the upstream's own account of the failure
        events: list[dict[str, Any]] = [
            {
                "type": "error",
                "code": error.code,
                "message": error.message,
                "param": error.param,
                "sequence_number": self._next,
            }
        ]
        if self._response is not None:  # ended as a Responses stream ends: response.failed
            failed = {
                **self._response,
                "status": "failed",
                "error": response_error(error.code, error.message),
            }
            events.append(
                {"type": "response.failed", "response": failed, "sequence_number": self._next + 1}
            )
        return [frame(events)]


class NativeTally(StreamTally):
    """Usage of an upstream's Responses stream: from its final response, else estimated."""

    __slots__ = ()

    def chunk(self, payload: bytes) -> bytes | None:
        obj = usage.parse(payload)
        if not isinstance(obj, dict):
            raise usage.not_json()
        delta = obj.get("delta")
        if isinstance(delta, str):
            self.chars += len(delta)
        if self.kept is not None and self.chars <= self.keep_chars:
            self.kept.add(obj)
        found = usage.usage_of(obj.get("response"))
        if found is not None:
            self.usage = found
        return payload
