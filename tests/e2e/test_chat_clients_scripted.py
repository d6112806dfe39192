"""Agent clients against the real server, on scripted models and an OpenAI upstream.

The openai SDK's ``parse`` and ``stream`` helpers, a forced and a streamed tool call, an
agent loop's second turn and LangChain's ``bind_tools`` / ``with_structured_output``,
with scripted models that call tools and answer in JSON (no model needed); and an
``openai`` upstream that gets tools and formats exactly as sent and whose tool calls
come back exactly as it wrote them, plain and streamed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str


class Person(BaseModel):
    name: str
    age: int


class Pet(BaseModel):
    kind: str
    owner: Person
    tags: list[str]


WEATHER_CALL = {"name": "GetWeather", "arguments": {"city": "Paris"}}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("agent", ["It is sunny in Paris."], options={"tool_call": WEATHER_CALL}),
            scripted("former", options={"json": {"name": "Mara", "age": 25}}),
            scripted("shaper"),  # JSON from the schema alone
            {
                "name": "up",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "ok+toolcall"},
            },
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


# ---- the openai SDK --------------------------------------------------------------------


def test_parse_gives_the_pydantic_model(api: openai.OpenAI) -> None:
    reply = api.chat.completions.parse(model="former", messages=ASK, response_format=Person)
    assert reply.choices[0].message.parsed == Person(name="Mara", age=25)
    beta = api.beta.chat.completions.parse(model="shaper", messages=ASK, response_format=Pet)
    assert beta.choices[0].message.parsed == Pet(kind="", owner=Person(name="", age=0), tags=[])


def test_a_forced_tool_call_parses_into_its_arguments_model(api: openai.OpenAI) -> None:
    reply = api.chat.completions.parse(
        model="agent",
        messages=ASK,
        tools=[openai.pydantic_function_tool(GetWeather)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(city="Paris")  # type: ignore[union-attr]


def test_a_streamed_tool_call_builds_the_same_call(api: openai.OpenAI) -> None:
    tools = [openai.pydantic_function_tool(GetWeather)]
    with api.chat.completions.stream(
        model="agent", messages=ASK, tools=tools, tool_choice="required"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.delta" in kinds
    assert "tool_calls.function.arguments.done" in kinds
    [call] = final.choices[0].message.tool_calls or []
    assert call.function.parsed_arguments == GetWeather(city="Paris")  # type: ignore[union-attr]
    assert final.choices[0].finish_reason == "tool_calls"


def test_an_agent_loop_ends_with_the_answer_to_the_tool_result(api: openai.OpenAI) -> None:
    tools: Any = [openai.pydantic_function_tool(GetWeather)]
    messages: list[Any] = list(ASK)
    first = api.chat.completions.create(model="agent", messages=messages, tools=tools)
    message = first.choices[0].message
    assert first.choices[0].finish_reason == "tool_calls" and message.content is None
    messages.append(message.model_dump(exclude_none=True))  # content null, tool_calls
    for call in message.tool_calls or []:
        city = json.loads(call.function.arguments)["city"]  # type: ignore[union-attr]
        messages.append({"role": "tool", "tool_call_id": call.id, "content": f"{city}: sunny"})
    second = api.chat.completions.create(model="agent", messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "It is sunny in Paris."


# ---- LangChain ---------------------------------------------------------------------------


def chat_model(server: RunningServer, model: str) -> ChatOpenAI:
    return ChatOpenAI(base_url=f"{server.base_url}/v1", api_key="none", model=model)  # type: ignore[arg-type]


def test_langchain_bind_tools_with_a_forced_choice(server: RunningServer) -> None:
    bound = chat_model(server, "agent").bind_tools([GetWeather], tool_choice="GetWeather")
    reply = bound.invoke("What is the weather in Paris?")
    assert isinstance(reply, AIMessage)
    assert [(c["name"], c["args"]) for c in reply.tool_calls] == [("GetWeather", {"city": "Paris"})]
    streamed = list(bound.stream("What is the weather in Paris?"))
    joined = streamed[0]
    for chunk in streamed[1:]:
        joined += chunk  # type: ignore[assignment]
    assert [(c["name"], c["args"]) for c in joined.tool_calls] == [  # type: ignore[attr-defined]
        ("GetWeather", {"city": "Paris"})
    ]


def test_langchain_with_structured_output(server: RunningServer) -> None:
    structured = chat_model(server, "former").with_structured_output(Person)
    assert structured.invoke("Who?") == Person(name="Mara", age=25)
    by_tool = chat_model(server, "shaper").with_structured_output(Person, method="function_calling")
    assert by_tool.invoke("Who?") == Person(name="", age=0)


# ---- an OpenAI upstream: untouched both ways ----------------------------------------------


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            "strict": True,
        },
    },
    {"type": "custom", "custom": {"name": "grep"}},  # not OpenAI's function: still passed on
]
FIELDS: Any = {
    "tools": TOOLS,
    "tool_choice": "required",
    "parallel_tool_calls": False,
    "response_format": {
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": True},
    },
}


def test_an_upstream_gets_the_agent_fields_as_sent(
    api: openai.OpenAI, upstream: FakeUpstream
) -> None:
    turn: Any = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_0", "content": [{"type": "text", "text": "sun"}]},
    ]
    api.chat.completions.create(model="up", messages=turn, **FIELDS)
    seen = upstream.requests[-1].body
    assert {k: seen[k] for k in FIELDS} == FIELDS
    assert seen["messages"] == turn


def test_an_upstreams_tool_calls_come_back_as_written(api: openai.OpenAI) -> None:
    plain = api.chat.completions.create(model="up", messages=ASK, **FIELDS)
    [call] = plain.choices[0].message.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (  # type: ignore[union-attr]
        "call_fake1",
        "get_weather",
        '{"city": "Paris"}',
    )
    assert plain.choices[0].finish_reason == "tool_calls"
    stream = api.chat.completions.create(model="up", messages=ASK, stream=True, **FIELDS)
    deltas = [
        d.model_dump(exclude_none=True)
        for chunk in stream
        for choice in chunk.choices
        for d in choice.delta.tool_calls or []
    ]
    assert deltas == [
        {
            "index": 0,
            "id": "call_fake1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        },
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Paris"}'}},
    ]
