"""The Responses <-> chat translator, field by field, and its events against OpenAI's schemas."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from appliance.errors import APIError, InvalidRequestError
from appliance.wire.openai.protocol import validate
from appliance.wire.responses.protocol import ResponsesRequest, param_name, to_chat
from appliance.wire.responses.reply import from_chat
from appliance.wire.responses.stream import RESPONSE_ERROR_CODES, EventStream, frame
from appliance.wire.usage import Usage
from tests.support.schemas import assert_valid, schema

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    "strict": True,
}


def chat_of(body: dict[str, Any]) -> dict[str, Any]:
    request = validate(ResponsesRequest, body)
    return to_chat(request, body)


def refused(body: dict[str, Any]) -> APIError:
    with pytest.raises(InvalidRequestError) as caught:
        chat_of({"model": "m", "input": "hi", **body})
    return caught.value


def test_string_input_is_one_user_message_after_the_instructions() -> None:
    chat = chat_of({"model": "m", "input": "Hi", "instructions": "Be brief."})
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert chat["model"] == "m" and "stream" not in chat


def test_sampling_and_limits_carry_over_under_their_chat_names() -> None:
    chat = chat_of(
        {
            "model": "m",
            "input": "Hi",
            "max_output_tokens": 40,
            "temperature": 0.2,
            "top_p": 0.9,
            "user": "u1",
            "stream": True,
            "seed": 7,  # outside the Responses API: travels on, as on /chat/completions
        }
    )
    assert chat["max_tokens"] == 40 and "max_output_tokens" not in chat
    assert (chat["temperature"], chat["top_p"], chat["user"], chat["seed"]) == (0.2, 0.9, "u1", 7)
    assert chat["stream"] is True


def test_items_become_an_agent_conversation() -> None:
    chat = chat_of(
        {
            "model": "m",
            "input": [
                {"role": "developer", "content": "Use tools."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Weather?"}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Let me see.", "annotations": []}],
                },
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_2",
                    "name": "get_weather",
                    "arguments": '{"city":"Oslo"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {
                    "type": "function_call_output",
                    "call_id": "call_2",
                    "output": [{"type": "input_text", "text": "3C"}],
                },
            ],
        }
    )
    system, user, assistant, first, second = chat["messages"]
    assert system == {"role": "system", "content": "Use tools."}
    assert user == {"role": "user", "content": [{"type": "text", "text": "Weather?"}]}
    assert assistant["content"] == [{"type": "text", "text": "Let me see."}]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_1", "call_2"]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert first == {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    assert second["content"] == [{"type": "text", "text": "3C"}]


def test_function_tools_and_choice_take_the_chat_shape() -> None:
    chat = chat_of(
        {
            "model": "m",
            "input": "Weather in Paris?",
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
        }
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city.",
                "parameters": WEATHER["parameters"],
                "strict": True,
            },
        }
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["parallel_tool_calls"] is False


def test_allowed_tools_take_the_chat_shape() -> None:
    chat = chat_of(
        {
            "model": "m",
            "input": "x",
            "tools": [WEATHER],
            "tool_choice": {
                "type": "allowed_tools",
                "mode": "required",
                "tools": [{"type": "function", "name": "get_weather"}],
            },
        }
    )
    assert chat["tool_choice"] == {
        "type": "allowed_tools",
        "allowed_tools": {
            "mode": "required",
            "tools": [{"type": "function", "function": {"name": "get_weather"}}],
        },
    }


def test_text_format_json_schema_is_a_response_format() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    chat = chat_of(
        {
            "model": "m",
            "input": "Who?",
            "text": {
                "format": {
                    "type": "json_schema",
                    "name": "person",
                    "schema": schema,
                    "strict": True,
                }
            },
        }
    )
    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": schema, "strict": True},
    }
    assert chat_of({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})[
        "response_format"
    ] == {"type": "json_object"}
    assert "response_format" not in chat_of(
        {"model": "m", "input": "x", "text": {"format": {"type": "text"}}}
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"include": ["message.output_text.logprobs"]}, "include"),
        ({"truncation": "auto"}, "truncation"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"max_tokens": 5}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"n": 2}, "n"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        ({"tool_choice": {"type": "file_search"}}, "tool_choice.type"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}},
            "tool_choice.name",
        ),
        ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        (
            {
                "input": [
                    {"role": "assistant", "content": [{"type": "input_image", "image_url": "u"}]}
                ]
            },
            "input[0].content[0].type",
        ),
        (
            {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
        ),
        ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
        ({"text": {"format": {"type": "grammar"}}}, "text.format.type"),
        ({"reasoning": {"summary": "auto"}}, "reasoning.summary"),
        ({"reasoning": {"effort": 3}}, "reasoning.effort"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}]},
            "input[0].call_id",
        ),
        ({"stream_options": {"include_usage": True}}, "stream_options.include_usage"),
        ({"tool_choice": "required"}, "tool_choice"),  # held to chat's own checks
    ],
)
def test_what_cannot_be_honoured_is_a_400_naming_it(body: dict[str, Any], param: str) -> None:
    error = refused(body)
    assert error.status == 400
    assert error.param == param
    assert param.split("[")[0].split(".")[0] in error.message


@pytest.mark.parametrize(
    ("chat", "responses"),
    [
        ("messages", "input"),
        ("messages[3].content[0].text", "input"),
        ("max_tokens", "max_output_tokens"),
        ("response_format.json_schema.schema", "text.format"),
        ("reasoning_effort", "reasoning.effort"),
        ("tool_choice", "tool_choice"),
        ("tools[0].function.name", "tools[0].function.name"),
        (None, None),
    ],
)
def test_backend_errors_name_fields_as_the_client_sent_them(
    chat: str | None, responses: str | None
) -> None:
    assert param_name(chat) == responses


def test_store_false_and_no_previous_response_are_fine() -> None:
    chat = chat_of({"model": "m", "input": "hi", "store": False, "previous_response_id": None})
    assert "store" not in chat and "previous_response_id" not in chat


def test_a_chat_reply_becomes_a_response_with_usage() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi", "metadata": {"k": "v"}})
    reply = {
        "id": "chatcmpl-1",
        "model": "served",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    }
    out = from_chat(request, reply, Usage(9, 2, 11), rid="resp_1", created=1)
    assert_valid("Response", out)
    assert out["status"] == "completed" and out["model"] == "served"
    assert out["output"][0]["content"][0]["text"] == "Paris."
    assert out["usage"]["input_tokens"] == 9 and out["usage"]["output_tokens"] == 2
    assert out["metadata"] == {"k": "v"} and out["store"] is False


def test_a_reply_cut_at_the_limit_is_incomplete() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi", "max_output_tokens": 2})
    reply = {"choices": [{"message": {"content": "Par"}, "finish_reason": "length"}]}
    out = from_chat(request, reply, Usage(1, 2, 3), rid="resp_1", created=1)
    assert_valid("Response", out)
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["output"][0]["status"] == "incomplete"


def test_tool_calls_become_function_call_items() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi", "tools": [WEATHER]})
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    reply = {
        "choices": [
            {"message": {"content": None, "tool_calls": [call]}, "finish_reason": "tool_calls"}
        ]
    }
    out = from_chat(request, reply, Usage(1, 2, 3), rid="resp_1", created=1)
    assert_valid("Response", out)
    (item,) = out["output"]
    assert (item["type"], item["call_id"], item["name"]) == (
        "function_call",
        "call_9",
        "get_weather",
    )


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": "served",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def test_a_text_stream_makes_the_typed_event_sequence() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi", "stream": True})
    stream = EventStream(request, "resp_1", 1)
    events = stream.chunk(chunk({"role": "assistant", "content": ""}))
    events += stream.chunk(chunk({"content": "Hel"}))
    events += stream.chunk(chunk({"content": "lo"}))
    events += stream.chunk(chunk({}, "stop"))
    events += stream.chunk(
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    )
    events += stream.end(Usage(3, 2, 5))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    for event in orjson.loads(b"[" + b",".join(orjson.dumps(e) for e in events) + b"]"):
        assert_valid("ResponseStreamEvent", event)
    # What was announced as added stays as it was added, though the item grew later.
    assert events[2]["item"]["content"] == [] and events[2]["item"]["status"] == "in_progress"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"]["total_tokens"] == 5


def test_a_streamed_tool_call_makes_argument_deltas() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi", "tools": [WEATHER]})
    stream = EventStream(request, "resp_1", 1)
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    events = stream.chunk(chunk({"tool_calls": [first]}))
    events += stream.chunk(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]})
    )
    events += stream.chunk(
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]})
    )
    events += stream.chunk(chunk({}, "tool_calls"))
    events += stream.end(Usage(3, 4, 7))
    kinds = [e["type"] for e in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    done = events[-3]
    assert done["arguments"] == '{"city":"Paris"}' and done["name"] == "get_weather"
    assert events[-1]["response"]["output"][0]["call_id"] == "call_1"


def test_a_failed_stream_ends_with_error_and_response_failed() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi"})
    stream = EventStream(request, "resp_1", 1)
    events = stream.chunk(chunk({"content": "Hi"}))
    events += stream.fail("upstream_error", "The upstream failed.", None)
    assert [e["type"] for e in events][-2:] == ["error", "response.failed"]
    for event in events:
        assert_valid("ResponseStreamEvent", event)
    assert events[-1]["response"]["status"] == "failed"
    assert events[-1]["response"]["error"]["code"] == "server_error"  # not in OpenAI's list


def test_a_failure_keeps_a_code_that_a_response_may_carry() -> None:
    request = validate(ResponsesRequest, {"model": "m", "input": "hi"})
    events = EventStream(request, "resp_1", 1).fail("rate_limit_exceeded", "Slow down.", None)
    assert events[-1]["response"]["error"] == {
        "code": "rate_limit_exceeded",
        "message": "Slow down.",
    }
    for event in events:
        assert_valid("ResponseStreamEvent", event)


def test_the_codes_a_response_may_carry_are_openais() -> None:
    assert set(schema("ResponseErrorCode")["enum"]) == RESPONSE_ERROR_CODES


def test_events_are_framed_with_their_type() -> None:
    framed = frame([{"type": "response.created", "sequence_number": 0}])
    assert (
        framed
        == b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    )
