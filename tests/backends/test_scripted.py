"""The scripted backend: deterministic, and honest about max_tokens and stop."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from appliance.backends.scripted import ScriptedWorker
from appliance.config import ScriptedModel
from appliance.config.backends import ScriptedToolCall
from appliance.errors import InvalidRequestError
from appliance.wire.openai.protocol import Endpoint
from tests.support.schemas import assert_valid


def worker(**options: Any) -> ScriptedWorker:
    return ScriptedWorker("m/0", ScriptedModel(name="m", backend="scripted", options=options))


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "one two three"}], **extra}


async def reply(w: ScriptedWorker, endpoint: Endpoint, body: dict[str, Any]) -> Any:
    return orjson.loads(await w.call(endpoint, body))


async def streamed(w: ScriptedWorker, endpoint: Endpoint, body: dict[str, Any]) -> list[Any]:
    stream = await w.open_stream(endpoint, body)
    try:
        return [orjson.loads(p) async for p in stream]
    finally:
        await stream.aclose()


async def test_echoes_the_last_user_message_without_a_reply() -> None:
    out = await reply(worker(), Endpoint.CHAT, chat())
    assert out["choices"][0]["message"]["content"] == "one two three"


async def test_max_tokens_cuts_and_says_length() -> None:
    out = await reply(worker(reply=["a", "b", "c"]), Endpoint.CHAT, chat(max_tokens=2))
    assert out["choices"][0]["message"]["content"] == "ab"
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 2


async def test_stop_sequence_is_honoured_across_chunks() -> None:
    out = await reply(worker(reply=["Hel", "lo wo", "rld"]), Endpoint.CHAT, chat(stop=["o w"]))
    assert out["choices"][0]["message"]["content"] == "Hell"
    assert out["choices"][0]["finish_reason"] == "stop"


async def test_stream_has_role_then_content_then_finish() -> None:
    chunks = await streamed(worker(reply=["x", "y"]), Endpoint.CHAT, chat())
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas == [{"content": "", "role": "assistant"}, {"content": "x"}, {"content": "y"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert len({c["id"] for c in chunks}) == 1


async def test_stream_with_n_streams_every_index() -> None:
    chunks = await streamed(worker(reply=["x"]), Endpoint.CHAT, chat(n=2))
    finishes = [c["choices"][0]["index"] for c in chunks if c["choices"][0]["finish_reason"]]
    assert finishes == [0, 1]


async def test_completions_list_prompt_gives_choices_per_prompt_times_n() -> None:
    out = await reply(worker(), Endpoint.COMPLETIONS, {"model": "m", "prompt": ["a", "b"], "n": 2})
    assert_valid("CreateCompletionResponse", out)
    assert [c["text"] for c in out["choices"]] == ["a", "a", "b", "b"]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]


async def test_embeddings_rank_related_text_closer() -> None:
    w = worker(dimensions=64)
    out = await reply(
        w,
        Endpoint.EMBEDDINGS,
        {"model": "m", "input": ["the red apple", "a red apple pie", "quantum tax law"]},
    )
    assert_valid("CreateEmbeddingResponse", out)
    a, b, c = (d["embedding"] for d in out["data"])

    def cos(x: list[float], y: list[float]) -> float:
        return sum(i * j for i, j in zip(x, y, strict=True))

    assert cos(a, b) > cos(a, c)
    assert abs(cos(a, a) - 1) < 1e-9


async def test_embeddings_are_deterministic_and_base64_matches_floats() -> None:
    w = worker(dimensions=8)
    body = {"model": "m", "input": "hello"}
    floats = (await reply(w, Endpoint.EMBEDDINGS, body))["data"][0]["embedding"]
    again = (await reply(w, Endpoint.EMBEDDINGS, body))["data"][0]["embedding"]
    encoded = await reply(w, Endpoint.EMBEDDINGS, {**body, "encoding_format": "base64"})
    decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert floats == again
    assert decoded == pytest.approx(floats, abs=1e-6)


async def test_rerank_orders_documents_by_relevance() -> None:
    out = await reply(
        worker(dimensions=64),
        Endpoint.RERANK,
        {
            "model": "m",
            "query": "red apple",
            "documents": ["tax law", "red apple pie"],
            "return_documents": True,
        },
    )
    assert [r["index"] for r in out["results"]] == [1, 0]
    assert out["results"][0]["document"] == {"text": "red apple pie"}


async def test_embeddings_cannot_stream() -> None:
    with pytest.raises(InvalidRequestError):
        await worker().open_stream(Endpoint.EMBEDDINGS, {"model": "m", "input": "x"})


async def test_embeddings_dimensions_below_the_models_are_honoured() -> None:
    out = await reply(worker(dimensions=8), Endpoint.EMBEDDINGS, embed_request(dimensions=4))
    vector = out["data"][0]["embedding"]
    assert len(vector) == 4
    assert sum(v * v for v in vector) == pytest.approx(1.0)


@pytest.mark.parametrize("dimensions", [9, 16826166.0])
async def test_embeddings_dimensions_above_the_models_are_refused(dimensions: float) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await reply(worker(dimensions=8), Endpoint.EMBEDDINGS, embed_request(dimensions=dimensions))
    assert caught.value.param == "dimensions"


def embed_request(**extra: Any) -> dict[str, Any]:
    """An embeddings request for one text."""
    return {"model": "m", "input": "hello there", **extra}


# ---- tool calls and JSON ---------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {"type": "function", "function": {"name": "get_time"}}
CALLS = {"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def call_of(message: dict[str, Any], index: int = 0) -> tuple[str, Any]:
    function = message["tool_calls"][index]["function"]
    return function["name"], orjson.loads(function["arguments"])


async def test_a_scripted_call_is_made_when_its_tool_is_offered() -> None:
    out = await reply(worker(**CALLS), Endpoint.CHAT, chat(tools=[WEATHER]))
    assert_valid("CreateChatCompletionResponse", out)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert call_of(choice["message"]) == ("get_weather", {"city": "Paris"})
    assert choice["message"]["tool_calls"][0]["id"].startswith("call_")
    assert out["usage"]["completion_tokens"] == 3  # the name, '{"city": ', '"Paris"}'


@pytest.mark.parametrize(
    "fields",
    [
        {},  # no tools offered
        {"tools": [TIME]},  # not the scripted function
        {"tools": [WEATHER], "tool_choice": "none"},
    ],
)
async def test_no_call_without_its_tool_or_with_tool_choice_none(fields: dict[str, Any]) -> None:
    out = await reply(worker(reply=["Hi"], **CALLS), Endpoint.CHAT, chat(**fields))
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hi", "refusal": None}
    assert out["choices"][0]["finish_reason"] == "stop"


async def test_auto_answers_a_tool_result_in_text_so_the_agent_loop_ends() -> None:
    turn = [
        {"role": "user", "content": "Weather in Paris?"},
        {
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
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    body = {"model": "m", "messages": turn, "tools": [WEATHER]}
    out = await reply(worker(reply=["Sunny."], **CALLS), Endpoint.CHAT, body)
    assert out["choices"][0]["message"]["content"] == "Sunny."
    forced = await reply(worker(**CALLS), Endpoint.CHAT, {**body, "tool_choice": "required"})
    assert forced["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("choice", "name", "arguments"),
    [
        ("required", "get_time", {}),  # no parameters schema
        ({"type": "function", "function": {"name": "get_weather"}}, "get_weather", {"city": ""}),
    ],
)
async def test_a_forced_function_without_a_script_gets_the_smallest_arguments(
    choice: Any, name: str, arguments: Any
) -> None:
    out = await reply(worker(), Endpoint.CHAT, chat(tools=[TIME, WEATHER], tool_choice=choice))
    assert call_of(out["choices"][0]["message"]) == (name, arguments)


async def test_parallel_calls_unless_parallel_tool_calls_is_false() -> None:
    calls = {"tool_call": [CALLS["tool_call"], {"name": "get_time", "arguments": "{}"}]}
    out = await reply(worker(**calls), Endpoint.CHAT, chat(tools=[WEATHER, TIME]))
    message = out["choices"][0]["message"]
    assert [call_of(message, i)[0] for i in range(2)] == ["get_weather", "get_time"]
    body = chat(tools=[WEATHER, TIME], parallel_tool_calls=False)
    out = await reply(worker(**calls), Endpoint.CHAT, body)
    assert len(out["choices"][0]["message"]["tool_calls"]) == 1


async def test_a_streamed_call_sends_id_and_name_first_then_arguments() -> None:
    body = chat(tools=[WEATHER], n=2, stream_options={"include_usage": True})
    chunks = await streamed(worker(**CALLS), Endpoint.CHAT, body)
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    for index in (0, 1):
        deltas = [
            c["choices"][0]["delta"]
            for c in chunks
            if c["choices"] and c["choices"][0]["index"] == index
        ]
        # As OpenAI: null content on a call, so clients that join deltas get None, not "".
        assert deltas[0] == {"role": "assistant", "content": None}
        first = deltas[1]["tool_calls"][0]
        assert first["function"] == {"name": "get_weather", "arguments": ""}
        assert {"index", "id", "type"} <= first.keys()
        pieces = [d["tool_calls"][0] for d in deltas[2:] if d]
        assert all(p.keys() == {"index", "function"} for p in pieces)
        assert orjson.loads("".join(p["function"]["arguments"] for p in pieces)) == {
            "city": "Paris"
        }
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes.count("tool_calls") == 2
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_max_tokens_cuts_a_call_and_says_length() -> None:
    out = await reply(worker(**CALLS), Endpoint.CHAT, chat(tools=[WEATHER], max_tokens=2))
    choice = out["choices"][0]  # the call's name and one piece of its arguments
    assert choice["finish_reason"] == "length"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": '
    assert out["usage"]["completion_tokens"] == 2


async def test_json_is_the_scripted_value_when_json_is_asked() -> None:
    w = worker(reply=["prose"], json={"name": "Mara", "age": 25})
    out = await reply(w, Endpoint.CHAT, chat(response_format={"type": "json_object"}))
    assert orjson.loads(out["choices"][0]["message"]["content"]) == {"name": "Mara", "age": 25}
    chunks = await streamed(w, Endpoint.CHAT, chat(response_format={"type": "json_object"}))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert orjson.loads(text) == {"name": "Mara", "age": 25}
    plain = await reply(w, Endpoint.CHAT, chat(response_format={"type": "text"}))
    assert plain["choices"][0]["message"]["content"] == "prose"


async def test_without_a_scripted_value_a_schema_gets_its_smallest_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "pet": {"$ref": "#/$defs/Pet"},
            "age": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
        },
        "$defs": {"Pet": {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}}},
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "p", "schema": schema, "strict": True}}
    out = await reply(worker(), Endpoint.CHAT, chat(response_format=fmt))
    value = orjson.loads(out["choices"][0]["message"]["content"])
    assert value == {"name": "", "tags": [], "pet": {"kind": "cat"}, "age": 1}
    out = await reply(worker(), Endpoint.CHAT, chat(response_format={"type": "json_object"}))
    assert out["choices"][0]["message"]["content"] == "{}"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"response_format": {"type": "grammar"}}, "response_format.type"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "custom", "custom": {"name": "x"}}},
            "tool_choice",
        ),
        ({"functions": [WEATHER["function"]]}, "functions"),
    ],
)
async def test_what_the_scripted_backend_cannot_do_is_a_400(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        await reply(worker(), Endpoint.CHAT, chat(**fields))
    assert caught.value.param == param


def test_scripted_calls_and_json_are_checked_options() -> None:
    with pytest.raises(ValueError, match="name"):
        ScriptedModel(name="m", backend="scripted", options={"tool_call": {"name": "a b"}})
    options = ScriptedModel(
        name="m", backend="scripted", options={"tool_call": {"name": "f"}, "json": [1]}
    ).options
    assert options.tool_call == [ScriptedToolCall(name="f")] and options.json_reply == [1]
