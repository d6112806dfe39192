"""``/v1/responses`` end to end: the real server, the real openai SDK, real fake upstreams.

Scripted models, an ``openai`` model in front of an upstream that serves only chat
completions (translation), and one in front of an upstream that serves the Responses API
itself (``responses: passthrough``). Replies and every stream event are checked against
OpenAI's published schemas.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer, free_port

KEY, SCOPED = "k-ci", "k-scoped"
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def chat_only() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def native() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(native_responses=True).start()
    yield upstream
    upstream.stop()


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], chat_only: FakeUpstream, native: FakeUpstream
) -> RunningServer:
    def upstream(name: str, fake: FakeUpstream, model: str, **options: Any) -> dict[str, Any]:
        return {
            "name": name,
            "backend": "openai",
            "options": {"base_url": fake.base_url, "model": model, **options},
        }

    dead = {
        "name": "dead",
        "backend": "openai",
        "options": {"base_url": f"http://127.0.0.1:{free_port()}/v1"},
        "health": {"interval_s": 0},
    }
    return start_server(
        cluster_config(
            scripted("hello", ["Hello", " world."]),
            scripted("person", ["Not JSON."], options={"json": {"name": "Mara", "age": 25}}),
            scripted(
                "caller",
                ["It is 18C in Paris."],
                options={"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            ),
            upstream("up", chat_only, "ok"),
            upstream("up-tools", chat_only, "ok+toolcall"),
            upstream("up-breaks", chat_only, "break-mid-stream"),
            upstream("up-fails", chat_only, "fail-400"),
            upstream("native", native, "ok", responses="passthrough"),
            upstream("native-fails", native, "fail-400", responses="passthrough"),
            upstream("native-breaks", native, "error-mid-stream", responses="passthrough"),
            upstream("native-cut", native, "truncated", responses="passthrough"),
            dead,
            auth={
                "api_keys": [
                    {"name": "ci", "key": KEY},
                    {"name": "scoped", "key": SCOPED, "models": ["hello"]},
                ]
            },
            routes=[{"alias": "fallback", "targets": ["dead", "hello"]}],
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0)


def post(
    server: RunningServer, body: dict[str, Any], key: str = KEY, prefix: str = "/v1"
) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}{prefix}/responses",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )


def sse_events(text: str) -> list[tuple[str | None, Any]]:
    """(event name, JSON data) of each SSE event; nothing else may be in the stream."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        name = lines[0].removeprefix("event: ") if lines[0].startswith("event: ") else None
        payload = "\n".join(
            line.removeprefix("data: ") for line in lines if line.startswith("data: ")
        )
        out.append((name, json.loads(payload)))
    return out


# ---- translated, on a scripted model -----------------------------------------------------


def test_create_answers_in_the_responses_shape(api: openai.OpenAI, server: RunningServer) -> None:
    reply = api.responses.create(model="hello", input="Hi", instructions="Be brief.")
    assert reply.output_text == "Hello world."
    assert reply.status == "completed" and reply.id.startswith("resp_")
    assert reply.instructions == "Be brief."
    assert reply.usage is not None and reply.usage.output_tokens == 2
    assert reply.usage.total_tokens == reply.usage.input_tokens + 2
    raw = post(server, {"model": "hello", "input": "Hi"})
    assert raw.status_code == 200
    assert_valid("Response", raw.json())


def test_api_prefix_serves_it_too(server: RunningServer) -> None:
    raw = post(server, {"model": "hello", "input": "Hi"}, prefix="/api/v1")
    assert (
        raw.status_code == 200 and raw.json()["output"][0]["content"][0]["text"] == "Hello world."
    )


def test_stream_deltas_join_to_the_final_output_text(api: openai.OpenAI) -> None:
    events = list(api.responses.create(model="hello", input="Hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response  # type: ignore[union-attr]
    assert deltas == final.output_text == "Hello world."
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))


def test_raw_stream_names_each_event_and_has_no_done_marker(server: RunningServer) -> None:
    raw = post(server, {"model": "hello", "input": "Hi", "stream": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in raw.text
    events = sse_events(raw.text)
    assert events and all(name == data["type"] for name, data in events)
    for _, data in events:
        assert_valid("ResponseStreamEvent", data)


def test_stream_helper_gives_the_final_response(api: openai.OpenAI) -> None:
    with api.responses.stream(model="hello", input="Hi") as stream:
        text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == final.output_text == "Hello world."


class Person(BaseModel):
    name: str
    age: int


def test_parse_reads_the_reply_into_a_pydantic_model(api: openai.OpenAI) -> None:
    reply = api.responses.parse(model="person", input="Make up a person.", text_format=Person)
    assert reply.output_parsed == Person(name="Mara", age=25)
    # The JSON came from text.format reaching the backend as response_format.
    assert (
        api.responses.create(model="person", input="Make up a person.").output_text == "Not JSON."
    )


def test_scripted_function_call_round_trip(api: openai.OpenAI) -> None:
    first = api.responses.create(model="caller", input="Weather in Paris?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}
    streamed = list(
        api.responses.create(model="caller", input="Weather?", tools=[WEATHER], stream=True)
    )
    done = next(e for e in streamed if e.type == "response.function_call_arguments.done")
    assert json.loads(done.arguments) == {"city": "Paris"}
    second = api.responses.create(
        model="caller",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            call,  # the output item passed back as it came, as agents do
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ],
    )
    assert second.output_text == "It is 18C in Paris."


def test_a_fallback_route_applies(api: openai.OpenAI) -> None:
    assert api.responses.create(model="fallback", input="Hi").output_text == "Hello world."


# ---- keys and errors ----------------------------------------------------------------------


def test_a_key_is_needed_and_its_model_scope_holds(server: RunningServer) -> None:
    wrong = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.responses.create(model="hello", input="Hi")
    scoped = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=SCOPED, max_retries=0)
    assert scoped.responses.create(model="hello", input="Hi").output_text == "Hello world."
    with pytest.raises(openai.PermissionDeniedError):
        scoped.responses.create(model="native", input="Hi")  # passthrough checks it too
    with pytest.raises(openai.PermissionDeniedError):
        scoped.responses.create(model="up", input="Hi")


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "hello", "input": "Hi", "store": True}, 400, "store"),
        (
            {"model": "hello", "input": "Hi", "previous_response_id": "resp_1"},
            400,
            "previous_response_id",
        ),
        (
            {"model": "hello", "input": "Hi", "tools": [{"type": "web_search"}]},
            400,
            "tools[0].type",
        ),
        ({"model": "hello", "input": "Hi", "temperature": 3}, 400, "temperature"),
        ({"model": "hello"}, 400, "input"),
        ({"model": "nope", "input": "Hi"}, 404, "model"),
        ({"model": "hello", "input": [{"type": "reasoning", "summary": []}]}, 400, "input[0].type"),
    ],
)
def test_bad_requests_get_the_openai_envelope(
    server: RunningServer, body: dict[str, Any], status: int, param: str
) -> None:
    raw = post(server, body)
    assert raw.status_code == status
    assert_valid("ErrorResponse", raw.json())
    assert raw.json()["error"]["param"] == param


def test_sdk_raises_bad_request_naming_the_field(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.responses.create(model="hello", input="Hi", store=True)
    assert "stateless" in caught.value.message
    assert api.responses.create(model="hello", input="Hi", store=False).output_text


# ---- translated, on an upstream that serves chat completions only ------------------------


def test_upstream_gets_an_ordinary_chat_request(
    api: openai.OpenAI, chat_only: FakeUpstream
) -> None:
    reply = api.responses.create(
        model="up", input="Hi", instructions="You are terse.", max_output_tokens=30, temperature=0.5
    )
    seen = chat_only.requests[-1]
    assert seen.path == "chat/completions"
    assert seen.body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi"},
    ]
    assert (seen.body["model"], seen.body["max_tokens"], seen.body["temperature"]) == (
        "ok",
        30,
        0.5,
    )
    assert "input" not in seen.body and "instructions" not in seen.body
    assert reply.output_text == "fake reply"
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (5, 2)  # the upstream's


def test_an_upstream_error_names_the_field_as_the_client_sent_it(server: RunningServer) -> None:
    raw = post(server, {"model": "up-fails", "input": "Hi"})
    assert raw.status_code == 400
    assert raw.json()["error"]["message"] == "fake says 400"  # the upstream's own words
    assert raw.json()["error"]["param"] == "input"  # it said messages


def test_upstream_stream_is_translated_with_its_usage(
    api: openai.OpenAI, chat_only: FakeUpstream
) -> None:
    events = list(api.responses.create(model="up", input="Hi", stream=True))
    seen = chat_only.requests[-1]
    assert seen.body["stream"] is True and seen.body["stream_options"] == {"include_usage": True}
    final = events[-1].response  # type: ignore[union-attr]
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == "c0 c1 c2 "
    assert final.usage is not None and final.usage.output_tokens == 3


def test_function_call_round_trip(api: openai.OpenAI, chat_only: FakeUpstream) -> None:
    first = api.responses.create(model="up-tools", input="Weather in Paris?", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call"
    assert (call.name, call.call_id) == ("get_weather", "call_fake1")
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert chat_only.requests[-1].body["tools"][0]["function"]["name"] == "get_weather"

    second = api.responses.create(
        model="up",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
    )
    assert second.output_text == "fake reply"
    _, assistant, tool = chat_only.requests[-1].body["messages"]
    assert assistant["tool_calls"][0]["id"] == "call_fake1"
    assert tool == {"role": "tool", "tool_call_id": "call_fake1", "content": "18C and sunny"}


def test_streamed_function_call_gives_argument_events(api: openai.OpenAI) -> None:
    events = list(
        api.responses.create(model="up-tools", input="Weather?", tools=[WEATHER], stream=True)
    )
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert "".join(pieces) == done.arguments and json.loads(done.arguments) == {"city": "Paris"}
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output[0].type == "function_call" and final.output[0].call_id == "call_fake1"


def test_a_stream_that_breaks_ends_with_error_and_response_failed(api: openai.OpenAI) -> None:
    events = list(api.responses.create(model="up-breaks", input="Hi", stream=True))
    for event in events:
        assert_valid("ResponseStreamEvent", event.model_dump(mode="json", exclude_unset=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None
    # What arrived before the break is kept in the failed response.
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "c0 c1 "
    assert failed.output[0].content[0].text == "c0 c1 "  # type: ignore[union-attr]


def test_a_client_that_leaves_mid_stream_closes_the_upstream_request(
    server: RunningServer, chat_only: FakeUpstream
) -> None:
    before = len(chat_only.disconnects)
    # x_chunks and x_chunk_delay_ms are outside the Responses API: they reach the upstream.
    body = {"model": "up", "input": "Hi", "stream": True, "x_chunks": 100, "x_chunk_delay_ms": 50}
    with httpx.stream(
        "POST",
        f"{server.base_url}/v1/responses",
        json=body,
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    ) as response:
        for line in response.iter_lines():
            if "response.output_text.delta" in line:
                break  # leave once the text has begun
    until(lambda: len(chat_only.disconnects) > before, what="the upstream seeing its close")


# ---- passthrough, to an upstream that serves the Responses API --------------------------


def test_passthrough_reaches_the_upstreams_own_route(
    api: openai.OpenAI, native: FakeUpstream, server: RunningServer
) -> None:
    before = tokens(server, "native", "prompt")
    reply = api.responses.create(
        model="native", input="Hi", store=True, previous_response_id="resp_0"
    )
    seen = native.requests[-1]
    assert seen.path == "responses"
    assert seen.body["input"] == "Hi" and seen.body["store"] is True  # as it came
    assert seen.body["previous_response_id"] == "resp_0" and seen.body["model"] == "ok"
    assert reply.output_text == "native reply"
    assert tokens(server, "native", "prompt") == before + 7  # the upstream's usage, charged


def test_passthrough_stream_is_relayed_with_event_names(
    server: RunningServer, native: FakeUpstream
) -> None:
    before = tokens(server, "native", "completion")
    raw = post(server, {"model": "native", "input": "Hi", "stream": True})
    events = sse_events(raw.text)
    assert [name for name, _ in events] == [data["type"] for _, data in events]
    assert events[-1][1]["type"] == "response.completed"
    assert "stream_options" not in native.requests[-1].body  # not a chat stream: not asked
    assert tokens(server, "native", "completion") == before + 3


def test_passthrough_relays_the_upstreams_own_error(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api.responses.create(model="native-fails", input="Hi")
    assert caught.value.message.endswith("fake says 400")


def test_passthrough_failure_events_are_relayed_once_and_recorded(server: RunningServer) -> None:
    raw = post(server, {"model": "native-breaks", "input": "Hi", "stream": True})
    events = sse_events(raw.text)
    kinds = [data["type"] for _, data in events]
    assert kinds[-2:] == ["error", "response.failed"] and kinds.count("error") == 1
    assert events[-2][1]["message"] == "native failure"  # the upstream's own words
    for _, data in events:
        assert_valid("ResponseStreamEvent", data)
    failed = server.events("stream_failed", message="native failure")
    assert failed and failed[-1]["error"] == "UpstreamStreamError"


def test_a_passthrough_stream_cut_short_ends_failed(server: RunningServer) -> None:
    raw = post(server, {"model": "native-cut", "input": "Hi", "stream": True})
    events = sse_events(raw.text)
    kinds = [data["type"] for _, data in events]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    assert "before the reply was finished" in events[-2][1]["message"]
    assert events[-1][1]["response"]["id"] == "resp_fake"  # the stream's own response
    seqs = [data["sequence_number"] for _, data in events]
    assert seqs == list(range(len(seqs)))
    for _, data in events:
        assert_valid("ResponseStreamEvent", data)


def tokens(server: RunningServer, model: str, kind: str) -> float:
    return server.metric("appliance_tokens_total", model=model, kind=kind)


def test_translated_requests_are_charged_and_counted(
    api: openai.OpenAI, server: RunningServer
) -> None:
    before = tokens(server, "up", "completion")
    api.responses.create(model="up", input="Hi")
    list(api.responses.create(model="up", input="Hi", stream=True))
    assert tokens(server, "up", "completion") == before + 2 + 3
    assert server.metric("appliance_requests_total", route="/v1/responses") >= 2
