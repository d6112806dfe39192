"""A chat stream as Anthropic's Messages events, translated chunk by chunk."""

from __future__ import annotations

from typing import Any

import orjson

from appliance.errors import APIError
from appliance.wire import usage
from appliance.wire.anthropic import reply as anthropic_reply
from appliance.wire.sse import named
from appliance.wire.usage import StreamTally


class AnthropicFraming:
    """Anthropic's SSE framing of a chat stream: named events, translated chunk by chunk."""

    def __init__(
        self,
        translator: anthropic_reply.StreamTranslator,
        tally: StreamTally,
        chat: dict[str, Any],
    ) -> None:
        self.translator = translator
        self.tally = tally
        self.chat = chat

    def chunk(self, payload: bytes) -> list[bytes]:
        return [_frame(event) for event in self.translator.chunk(usage.parse(payload))]

    def close(self, error: APIError | None) -> list[bytes]:
        if error is not None:
            return [_frame(anthropic_reply.error_event(error))]
        return [_frame(event) for event in self.translator.finish(self.tally.result(self.chat))]


def _frame(event: anthropic_reply.Event) -> bytes:
    name, data = event
    return named(name, orjson.dumps(data))
