"""Tool calls read out of a model's text, plain and streamed (no model needed)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from appliance.child.engines.llama_tools import Forced, Plain, Tagged, call_schema, legacy, message

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"place": {"$ref": "#/$defs/Place"}},
            "$defs": {"Place": {"type": "object", "properties": {"city": {"type": "string"}}}},
        },
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def streamed(reader: Any, parts: list[str]) -> list[dict[str, Any]]:
    return [d for p in parts for d in reader.feed(p)] + reader.end()


def joined_arguments(deltas: list[dict[str, Any]], index: int = 0) -> str:
    return "".join(
        c["function"]["arguments"]
        for d in deltas
        for c in d.get("tool_calls", [])
        if c["index"] == index
    )


def test_one_function_is_forced_by_its_name_and_parameters() -> None:
    schema = call_schema([WEATHER, TIME], ["get_time"])
    assert schema["properties"]["name"] == {"const": "get_time"}
    assert schema["properties"]["arguments"] == {"type": "object"}
    assert schema["required"] == ["name", "arguments"]


def test_several_functions_are_alternatives_with_their_defs_kept_apart() -> None:
    schema = call_schema([WEATHER, TIME], ["get_weather", "get_time"])
    first, second = schema["anyOf"]
    assert [first["properties"]["name"], second["properties"]["name"]] == [
        {"const": "get_weather"},
        {"const": "get_time"},
    ]
    place = first["properties"]["arguments"]["properties"]["place"]["$ref"]
    assert place == "#/$defs/f0_Place" and "f0_Place" in schema["$defs"]
    assert "$defs" in WEATHER["function"]["parameters"]  # the caller's tool is untouched


@pytest.mark.parametrize("size", [1, 3, 7, 200])
def test_a_forced_call_streams_name_first_then_its_arguments(size: int) -> None:
    text = '{ "name": "get_weather", "arguments": { "place": {"city": "Paris"} } }  '
    deltas = streamed(Forced(), pieces(text, size))
    first = deltas[0]["tool_calls"][0]
    assert first["function"] == {"name": "get_weather", "arguments": ""}
    assert first["id"].startswith("call_") and first["type"] == "function"
    assert all("id" not in c for d in deltas[1:] for c in d["tool_calls"])
    assert json.loads(joined_arguments(deltas)) == {"place": {"city": "Paris"}}
    assert joined_arguments(deltas) == '{ "place": {"city": "Paris"} }'


def test_a_forced_call_cut_short_keeps_what_was_written() -> None:
    reader = Forced()
    deltas = streamed(reader, ['{"name": "get_weather", "arguments": {"pla'])
    assert reader.called and joined_arguments(deltas) == '{"pla'


def test_auto_reads_tagged_calls_and_keeps_the_text() -> None:
    text = (
        'Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        '</tool_call><tool_call>{"name": "get_time", "parameters": {"zone": "CET"}}</tool_call>'
    )
    for size in (1, 4, 500):
        reader = Tagged(["get_weather", "get_time"])
        deltas = streamed(reader, pieces(text, size))
        assert reader.called
        assert "".join(d.get("content", "") for d in deltas).strip() == "Let me check."
        assert json.loads(joined_arguments(deltas, 0)) == {"city": "Paris"}
        assert json.loads(joined_arguments(deltas, 1)) == {"zone": "CET"}


@pytest.mark.parametrize(
    "text",
    [
        "Paris is sunny; a <tool_ is not a call.",
        '<tool_call>{"name": "unknown", "arguments": {}}</tool_call>',
        "<tool_call>not json</tool_call>",
    ],
)
def test_auto_relays_text_that_is_no_call_of_an_offered_function(text: str) -> None:
    for size in (1, 5, 500):
        reader = Tagged(["get_weather"])
        deltas = streamed(reader, pieces(text, size))
        assert not reader.called
        assert "".join(d["content"] for d in deltas) == text


def test_a_plain_message_folds_the_deltas() -> None:
    text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    out = message(text, Forced())
    assert out["content"] is None
    [call] = out["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert message("Hello", Plain()) == {"role": "assistant", "content": "Hello", "refusal": None}


def test_legacy_deltas_are_function_calls() -> None:
    deltas = streamed(Forced(), ['{"name": "f", "arguments": {"a": 1}}'])
    assert legacy(deltas[0]) == {"function_call": {"name": "f", "arguments": ""}}
    rest = [legacy(d)["function_call"]["arguments"] for d in deltas[1:]]
    assert "".join(rest) == '{"a": 1}'
    assert all("tool_calls" not in d for d in deltas)


def test_parallel_tool_calls_false_keeps_the_first_call() -> None:
    text = (
        '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
        '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'
    )
    for size in (1, 500):
        reader = Tagged(["get_weather", "get_time"], single=True)
        deltas = streamed(reader, pieces(text, size))
        assert json.loads(joined_arguments(deltas, 0)) == {"city": "Paris"}
        assert not any(c["index"] == 1 for d in deltas for c in d.get("tool_calls", []))
        assert "".join(d.get("content") or "" for d in deltas) == ""
