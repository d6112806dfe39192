"""``/v1/messages`` against the real local model of the default config (SmolLM2-135M on
llama.cpp), with the anthropic SDK."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest
from anthropic import types

from tests.support.server import RunningServer
from tests.wire.anthropic.strict import strictly

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"
FRANCE: list[Any] = [
    {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
]
GREEDY = {"temperature": 0}  # the installed SDK sends sampling fields as extra body
WEATHER: dict[str, Any] = {
    "name": "get_weather",
    "description": "Get the current weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
FORCED: Any = {"type": "tool", "name": "get_weather"}


@pytest.fixture(scope="module")
def api(start_server: Callable[..., RunningServer]) -> anthropic.Anthropic:
    server = start_server(DEFAULT_CONFIG)
    return anthropic.Anthropic(base_url=server.base_url, api_key="none", max_retries=0)


def checked(reply: types.Message) -> types.Message:
    return strictly(types.Message, reply.model_dump(mode="json", exclude_unset=True))  # type: ignore[no-any-return]


def test_create_answers_from_the_real_model(api: anthropic.Anthropic) -> None:
    reply = checked(
        api.messages.create(model="smollm2", max_tokens=40, messages=FRANCE, extra_body=GREEDY)
    )
    assert "Paris" in reply.content[0].text  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn"
    assert reply.usage.input_tokens > 10 and 0 < reply.usage.output_tokens < 40


def test_stream_text_joins_to_the_plain_reply(api: anthropic.Anthropic) -> None:
    plain = api.messages.create(
        model="smollm2",
        max_tokens=40,
        system="You are a helpful assistant.",
        messages=FRANCE,
        extra_body=GREEDY,
    )
    with api.messages.stream(
        model="smollm2",
        max_tokens=40,
        system="You are a helpful assistant.",
        messages=FRANCE,
        extra_body=GREEDY,
    ) as stream:
        pieces = list(stream.text_stream)
        final = checked(stream.get_final_message())
    assert len(pieces) > 3  # token by token, not one lump
    assert "".join(pieces) == plain.content[0].text  # type: ignore[union-attr]
    assert final.usage.input_tokens == plain.usage.input_tokens
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.stop_reason == plain.stop_reason


def test_max_tokens_stops_the_model(api: anthropic.Anthropic) -> None:
    reply = api.messages.create(model="smollm2", max_tokens=3, messages=FRANCE)
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3


def test_a_forced_tool_use_follows_its_schema(api: anthropic.Anthropic) -> None:
    reply = checked(
        api.messages.create(
            model="smollm2",
            max_tokens=60,
            messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
            tools=[WEATHER],
            tool_choice=FORCED,
            extra_body=GREEDY,
        )
    )
    assert reply.stop_reason == "tool_use"
    (use,) = [block for block in reply.content if block.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER["input_schema"])


def test_a_streamed_forced_tool_use_arrives_as_input_json(api: anthropic.Anthropic) -> None:
    with api.messages.stream(
        model="smollm2",
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],
        tool_choice=FORCED,
        extra_body=GREEDY,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partial = "".join(e.partial_json for e in events if e.type == "input_json")
    use = final.content[-1]
    assert use.type == "tool_use" and json.loads(partial) == use.input
    jsonschema.validate(use.input, WEATHER["input_schema"])
    assert final.stop_reason == "tool_use"


def test_a_tool_result_turn_is_answered(api: anthropic.Anthropic) -> None:
    first = api.messages.create(
        model="smollm2",
        max_tokens=60,
        messages=[{"role": "user", "content": "What is the weather like in Paris?"}],
        tools=[WEATHER],
        tool_choice=FORCED,
        extra_body=GREEDY,
    )
    (use,) = [block for block in first.content if block.type == "tool_use"]
    reply = checked(
        api.messages.create(
            model="smollm2",
            max_tokens=40,
            tools=[WEATHER],
            messages=[
                {"role": "user", "content": "What is the weather like in Paris?"},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}
                    ],
                },
            ],
            extra_body=GREEDY,
        )
    )
    # The 135M model may answer, or (offered the tool again) call it once more: greedy
    # decoding gives either, depending on what ran on the model before (a shuffled run)
    # and on the CPU variant's arithmetic.
    assert reply.content
    calls = [block for block in reply.content if block.type == "tool_use"]
    if reply.stop_reason == "tool_use":
        assert calls and calls[0].name == WEATHER["name"] and isinstance(calls[0].input, dict)
    else:
        assert reply.stop_reason in ("end_turn", "max_tokens") and not calls
        assert reply.content[0].type == "text" and reply.content[0].text.strip()


def test_an_image_is_refused_by_the_text_only_model(api: anthropic.Anthropic) -> None:
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    with pytest.raises(anthropic.BadRequestError) as caught:
        api.messages.create(
            model="smollm2",
            max_tokens=8,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image", "source": image},
                    ],
                }
            ],
        )
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "text only" in body["error"]["message"]


def test_count_tokens_matches_what_create_reads(api: anthropic.Anthropic) -> None:
    reply = api.messages.create(model="smollm2", max_tokens=2, messages=FRANCE)
    counted = api.messages.count_tokens(model="smollm2", messages=FRANCE)
    assert counted.input_tokens == reply.usage.input_tokens
