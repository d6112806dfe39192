"""``/v1/responses`` on the default config's real local model (SmolLM2-135M on llama.cpp).

Prompts are ones this model answers stably at temperature 0 (see FINDINGS).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.support.schemas import assert_valid
from tests.support.server import RunningServer

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"
PARIS = "What is the capital of France? Answer in one sentence."
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
    "strict": False,
}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_create_gives_a_real_answer(api: openai.OpenAI) -> None:
    reply = api.responses.create(model="smollm2", input=PARIS, temperature=0, max_output_tokens=40)
    assert "Paris" in reply.output_text
    assert reply.status == "completed"
    assert reply.usage is not None and reply.usage.input_tokens > 10
    assert 0 < reply.usage.output_tokens <= 40
    assert_valid("Response", reply.model_dump(mode="json", exclude_unset=True))


def test_stream_deltas_join_to_the_output_text(api: openai.OpenAI) -> None:
    events = list(
        api.responses.create(
            model="smollm2", input=PARIS, temperature=0, max_output_tokens=40, stream=True
        )
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    final = events[-1]
    assert final.type == "response.completed"
    assert len(deltas) > 3  # token by token, not one lump
    assert "".join(deltas) == final.response.output_text
    assert "Paris" in final.response.output_text
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))


def test_max_output_tokens_makes_it_incomplete(api: openai.OpenAI) -> None:
    reply = api.responses.create(model="smollm2", input=PARIS, max_output_tokens=3)
    assert reply.status == "incomplete"
    assert reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage is not None and reply.usage.output_tokens == 3


def test_a_prompt_over_the_context_is_a_400_naming_input(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.responses.create(model="smollm2", input="word " * 3000)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "input"


class Person(BaseModel):
    name: str
    age: int


def test_parse_follows_the_schema(api: openai.OpenAI) -> None:
    reply = api.responses.parse(
        model="smollm2",
        input="Make up a person. Give a name and an age.",
        text_format=Person,
        temperature=0,
        max_output_tokens=60,
    )
    assert isinstance(reply.output_parsed, Person)
    assert reply.output_parsed.name


def test_forced_function_call_round_trip(api: openai.OpenAI) -> None:
    first = api.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        temperature=0,
        max_output_tokens=60,
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    assert isinstance(json.loads(call.arguments).get("city"), str)

    second = api.responses.create(
        model="smollm2",
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=30,
        input=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert second.status in ("completed", "incomplete")
    assert second.output[0].type == "message" and second.output_text


def test_a_streamed_forced_call_gives_argument_events(api: openai.OpenAI) -> None:
    events = list(
        api.responses.create(
            model="smollm2",
            input="What is the weather in Paris?",
            tools=[WEATHER],
            tool_choice="required",
            temperature=0,
            max_output_tokens=60,
            stream=True,
        )
    )
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and done[0].name == "get_weather"
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert pieces == done[0].arguments
    assert "city" in json.loads(done[0].arguments)
