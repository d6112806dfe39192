"""Anthropic tool use and structured output on the real server, with scripted models that
call tools and answer in JSON (no model needed), through the anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic import types

from tests.conftest import cluster_config, scripted
from tests.support.server import RunningServer
from tests.wire.anthropic.strict import strictly

WEATHER: Any = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
TIME: Any = {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
ASK: list[Any] = [{"role": "user", "content": "Weather in Paris, and the time?"}]


@pytest.fixture(scope="module")
def api(start_server: Callable[..., RunningServer]) -> anthropic.Anthropic:
    calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {}},
    ]
    server = start_server(
        cluster_config(
            scripted("agent", ["It is ", "sunny."], options={"tool_call": calls}),
            scripted("former", options={"json": {"name": "Mara", "age": 25}}),
        )
    )
    return anthropic.Anthropic(base_url=server.base_url, api_key="none", max_retries=0)


def test_tool_calls_come_back_as_tool_use_blocks(api: anthropic.Anthropic) -> None:
    reply = api.messages.create(model="agent", max_tokens=32, messages=ASK, tools=[WEATHER, TIME])
    strictly(types.Message, reply.model_dump(mode="json", exclude_unset=True))
    assert reply.stop_reason == "tool_use"
    uses = [(b.name, b.input) for b in reply.content if b.type == "tool_use"]
    assert uses == [("get_weather", {"city": "Paris"}), ("get_time", {})]


def test_streamed_tool_calls_build_the_same_blocks(api: anthropic.Anthropic) -> None:
    plain = api.messages.create(model="agent", max_tokens=32, messages=ASK, tools=[WEATHER, TIME])
    with api.messages.stream(
        model="agent", max_tokens=32, messages=ASK, tools=[WEATHER, TIME]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        (b.type, getattr(b, "input", None)) for b in plain.content
    ]
    assert final.stop_reason == "tool_use"
    assert any(e.type == "input_json" for e in events)


def test_a_forced_tool_is_the_one_called(api: anthropic.Anthropic) -> None:
    reply = api.messages.create(
        model="agent",
        max_tokens=32,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert [b.name for b in reply.content if b.type == "tool_use"] == ["get_time"]


def test_tool_results_are_answered_with_text(api: anthropic.Anthropic) -> None:
    first = api.messages.create(model="agent", max_tokens=32, messages=ASK, tools=[WEATHER, TIME])
    results = [
        {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps({"ok": True})}
        for b in first.content
        if b.type == "tool_use"
    ]
    reply = api.messages.create(
        model="agent",
        max_tokens=32,
        tools=[WEATHER, TIME],
        messages=[
            *ASK,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": results},
        ],
    )
    assert reply.stop_reason == "end_turn"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "It is sunny."  # type: ignore[union-attr]


def test_tool_choice_none_answers_in_text(api: anthropic.Anthropic) -> None:
    reply = api.messages.create(
        model="agent", max_tokens=32, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert [b.type for b in reply.content] == ["text"] and reply.stop_reason == "end_turn"


def test_an_output_format_gets_json(api: anthropic.Anthropic) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    reply = api.messages.create(
        model="former",
        max_tokens=64,
        messages=[{"role": "user", "content": "Invent a person."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}},
    )
    assert json.loads(reply.content[0].text) == {"name": "Mara", "age": 25}  # type: ignore[union-attr]
