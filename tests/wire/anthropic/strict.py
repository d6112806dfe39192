"""Checking replies and stream events strictly against the anthropic SDK's own types."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
from anthropic import types

EVENTS: dict[str, type[pydantic.BaseModel]] = {
    "message_start": types.RawMessageStartEvent,
    "message_delta": types.RawMessageDeltaEvent,
    "message_stop": types.RawMessageStopEvent,
    "content_block_start": types.RawContentBlockStartEvent,
    "content_block_delta": types.RawContentBlockDeltaEvent,
    "content_block_stop": types.RawContentBlockStopEvent,
}


def strictly(model: type[pydantic.BaseModel], data: Any) -> Any:
    """``data`` validated as ``model``, with no field the SDK does not know, at any depth."""
    parsed = model.model_validate(data)
    _no_extras(parsed, model.__name__)
    return parsed


def _no_extras(value: Any, where: str) -> None:
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: unknown fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            _no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_extras(item, f"{where}[{i}]")


def sse_events(text: str) -> list[tuple[str, Any]]:
    """The named events of an SSE body: (event, JSON data); comments skipped."""
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        if name is not None:
            events.append((name, orjson.loads("\n".join(data))))
    return events


def check_stream(events: list[tuple[str, Any]]) -> list[Any]:
    """Each event checked against its SDK type and Anthropic's order; the parsed events."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"], names
    parsed = []
    for name, data in events:
        assert data["type"] == name
        if name == "ping":
            assert data == {"type": "ping"}
            continue
        parsed.append(strictly(EVENTS[name], data))
    open_block = None
    for event in parsed:
        if event.type == "content_block_start":
            assert open_block is None
            open_block = event.index
        elif event.type == "content_block_delta":
            assert event.index == open_block
        elif event.type == "content_block_stop":
            assert event.index == open_block
            open_block = None
    assert open_block is None
    return parsed
