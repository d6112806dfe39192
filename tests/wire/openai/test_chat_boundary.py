"""The agent fields of a chat request are checked at the boundary, for every backend.

A malformed tool, tool choice, schema or message is a 400 naming the parameter, in the
OpenAI envelope, before any worker sees it; a well-formed request travels on as sent.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from appliance.wire.openai import protocol
from tests.conftest import cluster_config, scripted

CONFIG = cluster_config(scripted("m", ["ok"]))
USER = {"role": "user", "content": "hi"}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
MISSING, TYPE, VALUE = "missing_required_parameter", "invalid_type", "invalid_value"
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}

AGENT_TURN: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        USER,
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ],
    "tools": [TOOL, {"type": "custom", "custom": {"name": "grep"}}],
    "tool_choice": {"type": "function", "function": {"name": "f"}},
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
}


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"tools": [{"type": "function"}]}, "tools[0].function", MISSING),
        (
            {"tools": [{"type": "function", "function": {"name": "a b"}}]},
            "tools[0].function.name",
            TYPE,
        ),
        (
            {"tools": [{**TOOL, "function": {"name": "f", "parameters": []}}]},
            "tools[0].function.parameters",
            TYPE,
        ),
        ({"tools": {"f": TOOL}}, "tools", TYPE),
        ({"tools": [TOOL] * 129}, "tools", "array_above_max_length"),
        ({"tools": [TOOL], "tool_choice": "always"}, "tool_choice", VALUE),
        ({"tool_choice": "required"}, "tool_choice", VALUE),
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "g"}}},
            "tool_choice",
            VALUE,
        ),
        ({"tools": [TOOL], "tool_choice": {"type": "function"}}, "tool_choice.function", MISSING),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls", TYPE),
        ({"reasoning_effort": 3}, "reasoning_effort", TYPE),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", MISSING),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
            "response_format.json_schema.name",
            MISSING,
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": "{}"},
                }
            },
            "response_format.json_schema.schema",
            VALUE,
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "strict": "yes"},
                }
            },
            "response_format.json_schema.strict",
            TYPE,
        ),
        ({"response_format": "json"}, "response_format", TYPE),
        (
            {"messages": [USER, {"role": "tool", "content": "42"}]},
            "messages[1].tool_call_id",
            MISSING,
        ),
        (
            {"messages": [USER, {"role": "assistant", "content": None}]},
            "messages[1].content",
            MISSING,
        ),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "assistant",
                        "tool_calls": [{**CALL, "function": {"name": "f", "arguments": {}}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
            TYPE,
        ),
        (
            {"messages": [USER, {"role": "assistant", "tool_calls": [{"type": "function"}]}]},
            "messages[1].tool_calls[0].id",
            MISSING,
        ),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", MISSING),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
            MISSING,
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "hi"}]}]},
            "messages[0].content[0].type",
            MISSING,
        ),
        (
            {"messages": [{"role": "user", "content": "hi", "tool_calls": [CALL]}]},
            "messages[0].tool_calls",
            VALUE,
        ),
    ],
)
async def test_a_malformed_agent_field_is_a_400_naming_it(
    app_client: Any, change: dict[str, Any], param: str, code: str
) -> None:
    body = {"model": "m", "messages": [USER], **change}
    async with app_client(CONFIG) as client:
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert param in error["message"]


def test_a_well_formed_agent_turn_travels_on_as_sent() -> None:
    # What a local worker hands its engine: the validated request, dumped again.
    request = protocol.validate(protocol.ChatCompletionRequest, copy.deepcopy(AGENT_TURN))
    assert request.model_dump(exclude_unset=True) == AGENT_TURN


async def test_tool_choice_none_or_auto_needs_no_tools(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        for choice in ("none", "auto"):
            body = {"model": "m", "messages": [USER], "tool_choice": choice}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
