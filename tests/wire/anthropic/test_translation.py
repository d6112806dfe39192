"""The one translator: Messages requests to chat requests, chat replies back."""

from __future__ import annotations

from typing import Any

import pytest
from anthropic import types

from appliance.errors import InvalidRequestError, UpstreamError
from appliance.wire.anthropic import protocol as anthropic
from appliance.wire.anthropic import to_chat
from appliance.wire.anthropic.reply import StreamTranslator, message
from appliance.wire.usage import Usage
from tests.wire.anthropic.strict import check_stream, strictly

WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def chat_of(**fields: Any) -> dict[str, Any]:
    body = {"model": "m", "max_tokens": 16, **fields}
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return to_chat.to_chat(anthropic.parse(anthropic.MessagesRequest, body))


def refusal(**fields: Any) -> InvalidRequestError:
    body = {"model": "m", "max_tokens": 16, **fields}
    body.setdefault("messages", [{"role": "user", "content": "Hi"}])
    with pytest.raises(InvalidRequestError) as caught:
        to_chat.to_chat(anthropic.parse(anthropic.MessagesRequest, body))
    return caught.value


def test_system_blocks_become_the_first_system_message() -> None:
    chat = chat_of(system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "X"}])
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief.\nX"},
        {"role": "user", "content": "Hi"},
    ]
    assert chat["max_tokens"] == 16 and "stream" not in chat


def test_sampling_fields_map_to_their_chat_names() -> None:
    chat = chat_of(
        stop_sequences=["END"],
        temperature=0,
        top_p=0.5,
        top_k=7,
        metadata={"user_id": "u1"},
        stream=True,
    )
    assert chat["stop"] == ["END"] and chat["temperature"] == 0 and chat["top_p"] == 0.5
    assert chat["top_k"] == 7 and chat["user"] == "u1" and chat["stream"] is True


def test_an_agent_turn_becomes_tool_calls_and_tool_messages() -> None:
    chat = chat_of(
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]


def test_a_failed_tool_result_says_so() -> None:
    block = {
        "type": "tool_result",
        "tool_use_id": "t",
        "is_error": True,
        "content": [{"type": "text", "text": "timeout"}],
    }
    call = {"type": "tool_use", "id": "t", "name": "get_weather", "input": {"city": "Paris"}}
    turns = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [block]},
    ]
    chat = chat_of(messages=turns, tools=[WEATHER])
    expected = {"role": "tool", "tool_call_id": "t", "content": "Error: timeout"}
    assert chat["messages"][-1] == expected


def test_images_become_image_url_parts() -> None:
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    url = {"type": "image", "source": {"type": "url", "url": "https://example.invalid/a.png"}}
    chat = chat_of(
        messages=[{"role": "user", "content": [{"type": "text", "text": "What?"}, image, url]}]
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "What?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "any"}, "required"),
        (
            {"type": "tool", "name": "get_weather"},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice_maps_to_chat(choice: dict[str, Any], expected: Any) -> None:
    assert chat_of(tools=[WEATHER], tool_choice=choice)["tool_choice"] == expected


def test_disabling_parallel_tool_use_maps_to_parallel_tool_calls() -> None:
    chat = chat_of(tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
    assert chat["parallel_tool_calls"] is False


def test_output_format_becomes_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    chat = chat_of(output_config={"format": {"type": "json_schema", "schema": schema}})
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking.type"),
        ({"container": "c1"}, "container"),
        (
            {"tools": [WEATHER, {"type": "web_search_20250305", "name": "web_search"}]},
            "tools.1.type",
        ),
        ({"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]}, "tool_choice.name"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
        (
            {"messages": [{"role": "user", "content": [{"type": "document"}]}]},
            "messages.0.content.0.type",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "x": 1}]}]},
            "messages.0.content.0.x",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "The"},
                ]
            },
            "messages.1",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x"}],
                    },
                    {"role": "user", "content": "Hi"},
                ]
            },
            "messages.0.content.0",
        ),
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    error = refusal(**fields)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "user", "content": ""}], "messages.0.content"),
        ([{"role": "user", "content": []}], "messages.0.content"),
        (
            [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "toolu_2", "content": "x"}],
                },
            ],
            "messages.2.content.0",
        ),
    ],
)
def test_turns_anthropic_refuses_are_refused(messages: list[Any], param: str) -> None:
    """Empty turns, and a tool_result that answers no tool_use of the turn before it."""
    error = refusal(messages=messages, tools=[WEATHER])
    assert error.param == param
    assert error.message.startswith(f"{param}: ")


def test_a_missing_max_tokens_is_named() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        anthropic.parse(
            anthropic.MessagesRequest,
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert caught.value.message == "max_tokens: Field required"


def test_a_plain_reply_with_a_tool_call_becomes_a_tool_use_message() -> None:
    reply = {
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
            }
        ],
    }
    out = strictly(types.Message, message(reply, Usage(10, 4, 14), "m", None))
    assert out.stop_reason == "tool_use"
    assert out.content[0].type == "tool_use" and out.content[0].input == {"city": "Paris"}
    assert (out.usage.input_tokens, out.usage.output_tokens) == (10, 4)


def test_tool_arguments_that_are_not_an_object_are_a_bad_reply() -> None:
    reply = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1"}}]
                },
            }
        ]
    }
    with pytest.raises(UpstreamError):
        message(reply, Usage(1, 1, 2), "m", None)


@pytest.mark.parametrize(
    ("finish", "matched", "reason", "sequence"),
    [
        ("stop", None, "end_turn", None),
        ("length", None, "max_tokens", None),
        ("stop", "END", "stop_sequence", "END"),  # vLLM names the stop string that matched
        ("tool_calls", None, "tool_use", None),
    ],
)
def test_stop_reasons(finish: str, matched: str | None, reason: str, sequence: str | None) -> None:
    reply = {
        "choices": [
            {
                "index": 0,
                "finish_reason": finish,
                "stop_reason": matched,
                "message": {"content": "x"},
            }
        ]
    }
    out = message(reply, Usage(1, 1, 2), "m", ["END"])
    assert (out["stop_reason"], out["stop_sequence"]) == (reason, sequence)


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_a_stream_of_text_then_tool_calls_becomes_blocks_in_order() -> None:
    translator = StreamTranslator("m", None)
    events = []
    for obj in [
        chunk({"role": "assistant", "content": "Let me"}),
        chunk({"content": " check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 5}},
    ]:
        events.extend(translator.chunk(obj))
    events.extend(translator.finish(Usage(9, 5, 14)))
    parsed = check_stream(events)
    starts = [e.content_block for e in parsed if e.type == "content_block_start"]
    assert [b.type for b in starts] == ["text", "tool_use", "tool_use"]
    assert [b.id for b in starts[1:]] == ["call_a", "call_b"]
    json_parts = [
        e.delta.partial_json
        for e in parsed
        if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    ]
    assert json_parts == ['{"city": ', '"Paris"}', "{}"]
    end = parsed[-2]
    assert end.delta.stop_reason == "tool_use"
    assert (end.usage.input_tokens, end.usage.output_tokens) == (9, 5)


def test_an_empty_stream_still_starts_and_ends_the_message() -> None:
    translator = StreamTranslator("m", None)
    parsed = check_stream(translator.finish(Usage(3, 0, 3)))
    assert [e.type for e in parsed] == ["message_start", "message_delta", "message_stop"]


def test_interleaved_parallel_calls_become_whole_blocks_one_after_another() -> None:
    """vLLM and OpenAI may interleave parallel calls' argument pieces; Anthropic's content
    blocks cannot interleave, so the later call is sent whole after the open one."""

    def call(index: int, arguments: str, name: str | None = None) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": arguments}
        if name is not None:
            function["name"] = name
            return {"index": index, "id": f"call_{index}", "type": "function", "function": function}
        return {"index": index, "function": function}

    translator = StreamTranslator("m", None)
    events = []
    for obj in [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [call(0, '{"city": ', "get_weather")]}),
        chunk({"tool_calls": [call(1, '{"zone": ', "get_time")]}),
        chunk({"tool_calls": [call(0, '"Paris"}')]}),
        chunk({"tool_calls": [call(1, '"CET"}')]}),
        chunk({}, "tool_calls"),
    ]:
        events.extend(translator.chunk(obj))
    events.extend(translator.finish(Usage(9, 6, 15)))
    parsed = check_stream(events)
    blocks: dict[int, list[str]] = {}
    names = {}
    for event in parsed:
        if event.type == "content_block_start":
            names[event.index] = event.content_block.name
            blocks[event.index] = []
        elif event.type == "content_block_delta":
            blocks[event.index].append(event.delta.partial_json)
    assert names == {0: "get_weather", 1: "get_time"}
    assert "".join(blocks[0]) == '{"city": "Paris"}'
    assert "".join(blocks[1]) == '{"zone": "CET"}'
    assert parsed[-2].delta.stop_reason == "tool_use"
