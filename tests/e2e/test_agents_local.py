"""Agent clients against the local SmolLM2 of the default config, through the real server.

The openai SDK's ``parse`` with a pydantic model, a forced tool call parsed into its
arguments model, a streamed call where ``required`` leaves the model a choice of two
tools, an agent loop's second turn, and LangChain's ``bind_tools`` and
``with_structured_output``. Grammars make the shapes certain; what a 135M model writes
inside them is not, so the tests check shapes and schemas, not facts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.support.server import RunningServer

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"
WEATHER_ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]


class GetWeather(BaseModel):
    """The current weather in a city."""

    city: str


class GetTime(BaseModel):
    """The current time in a time zone."""

    zone: str


class Person(BaseModel):
    name: str
    age: int


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_parse_fills_a_pydantic_model(api: openai.OpenAI) -> None:
    reply = api.chat.completions.parse(
        model="smollm2",
        temperature=0,
        max_tokens=40,
        messages=[{"role": "user", "content": "Give a person's name and age as JSON."}],
        response_format=Person,
    )
    assert isinstance(reply.choices[0].message.parsed, Person)


def test_a_forced_tool_call_parses_into_its_arguments_model(api: openai.OpenAI) -> None:
    reply = api.chat.completions.parse(
        model="smollm2",
        temperature=0,
        messages=WEATHER_ASK,
        tools=[openai.pydantic_function_tool(GetWeather), openai.pydantic_function_tool(GetTime)],
        tool_choice={"type": "function", "function": {"name": "GetWeather"}},
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert isinstance(call.function.parsed_arguments, GetWeather)  # type: ignore[union-attr]


def test_required_with_two_tools_streams_a_call_of_one(api: openai.OpenAI) -> None:
    tools: Any = [
        openai.pydantic_function_tool(GetWeather),
        openai.pydantic_function_tool(GetTime),
    ]
    stream = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        messages=WEATHER_ASK,
        tools=tools,
        tool_choice="required",
        stream=True,
    )
    deltas, finishes = [], []
    for chunk in stream:
        for choice in chunk.choices:
            deltas += choice.delta.tool_calls or []
            finishes.append(choice.finish_reason)
    first, rest = deltas[0], deltas[1:]
    assert first.id and first.type == "function" and first.function
    assert first.function.arguments == ""
    assert all(d.id is None and d.function and d.function.name is None for d in rest)
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    arguments = json.loads("".join(d.function.arguments or "" for d in rest if d.function))
    jsonschema.validate(arguments, schemas[first.function.name])
    assert finishes[-1] == "tool_calls"


def test_an_agent_loops_second_turn_answers_in_text(api: openai.OpenAI) -> None:
    tools: Any = [openai.pydantic_function_tool(GetWeather)]
    messages: list[Any] = list(WEATHER_ASK)
    first = api.chat.completions.create(
        model="smollm2", temperature=0, messages=messages, tools=tools, tool_choice="required"
    )
    message = first.choices[0].message
    messages.append(message.model_dump(exclude_none=True))
    [call] = message.tool_calls or []
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C."})
    second = api.chat.completions.create(
        model="smollm2", temperature=0, max_tokens=40, messages=messages, tools=tools
    )
    # Offered the tool again, the 135M model may answer or call it once more: greedy
    # decoding gives either, depending on the CPU variant's arithmetic and what ran on the
    # model before. Either answer must be consistent.
    choice = second.choices[0]
    if choice.finish_reason == "tool_calls":
        [again] = choice.message.tool_calls or []
        assert again.function.name == call.function.name
        assert isinstance(json.loads(again.function.arguments), dict)
    else:
        assert choice.message.content and not choice.message.tool_calls
    # With tool_choice "none" (an agent's last turn) it must answer in text.
    final = api.chat.completions.create(
        model="smollm2",
        temperature=0,
        max_tokens=40,
        messages=messages,
        tools=tools,
        tool_choice="none",
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason in ("stop", "length")


def test_langchain_forced_tool_and_structured_output(server: RunningServer) -> None:
    model = ChatOpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="none",  # type: ignore[arg-type]
        model="smollm2",
        temperature=0,
        max_tokens=60,  # type: ignore[call-arg]
    )
    reply = model.bind_tools([GetWeather], tool_choice="GetWeather").invoke(
        "What is the weather in Paris?"
    )
    assert isinstance(reply, AIMessage)
    [call] = reply.tool_calls
    assert call["name"] == "GetWeather" and isinstance(call["args"]["city"], str)
    person = model.with_structured_output(Person).invoke("Give a person's name and age.")
    assert isinstance(person, Person)
