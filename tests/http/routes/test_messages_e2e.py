"""``/v1/messages`` on the real server, with the anthropic SDK: scripted models, an OpenAI
upstream (the fake), keys, limits and errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import pytest
from anthropic import types
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import PROMPT_TOKENS, FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer
from tests.wire.anthropic.strict import check_stream, sse_events, strictly

KEY, NARROW, SLOW = "sk-anthropic-test", "sk-narrow", "sk-one-a-minute"
ASK: list[Any] = [{"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer], upstream: FakeUpstream) -> RunningServer:
    def proxied(name: str, served: str) -> dict[str, Any]:
        options = {"base_url": upstream.base_url, "model": served}
        return {"name": name, "backend": "openai", "options": options, "health": {"interval_s": 0}}

    return start_server(
        cluster_config(
            scripted("hello", ["Hello", " world."]),
            scripted("echo"),
            proxied("proxied", "ok"),
            proxied("breaks", "break-mid-stream"),
            auth={
                "api_keys": [
                    {"name": "ci", "key": KEY},
                    {"name": "narrow", "key": NARROW, "models": ["echo"]},
                    {"name": "slow", "key": SLOW, "rpm": 1},
                ]
            },
        )
    )


def client(server: RunningServer, key: str = KEY, **options: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key=key, max_retries=0, **options)


def test_create_answers_a_message(server: RunningServer) -> None:
    reply = client(server).messages.create(model="hello", max_tokens=16, messages=ASK)
    message = strictly(types.Message, reply.model_dump(mode="json", exclude_unset=True))
    assert [block.type for block in message.content] == ["text"]
    assert reply.content[0].text == "Hello world."  # type: ignore[union-attr]
    assert reply.stop_reason == "end_turn" and reply.role == "assistant"
    assert reply.usage.output_tokens == 2 and reply.usage.input_tokens > 0


def test_max_tokens_ends_with_stop_reason_max_tokens(server: RunningServer) -> None:
    reply = client(server).messages.create(model="hello", max_tokens=1, messages=ASK)
    assert reply.stop_reason == "max_tokens"
    assert reply.content[0].text == "Hello"  # type: ignore[union-attr]


def test_stream_joins_to_the_plain_text(server: RunningServer) -> None:
    plain = client(server).messages.create(model="echo", max_tokens=16, messages=ASK)
    with client(server).messages.stream(model="echo", max_tokens=16, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == "Hi there"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


def test_stream_events_follow_anthropics_sequence(server: RunningServer) -> None:
    body = {"model": "hello", "max_tokens": 16, "stream": True, "messages": ASK}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    parsed = check_stream(events)
    assert parsed[-2].delta.stop_reason == "end_turn" and parsed[-2].usage.output_tokens == 2


def test_the_api_v1_prefix_serves_it_too(server: RunningServer) -> None:
    api = anthropic.Anthropic(base_url=f"{server.base_url}/api", api_key=KEY, max_retries=0)
    reply = api.messages.create(model="hello", max_tokens=16, messages=ASK)
    assert reply.content[0].text == "Hello world."  # type: ignore[union-attr]


def test_a_wrong_api_key_raises_authentication_error(server: RunningServer) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(server, "sk-wrong").messages.create(model="hello", max_tokens=4, messages=ASK)
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }


def test_a_bearer_token_is_accepted_too(server: RunningServer) -> None:
    api = anthropic.Anthropic(base_url=server.base_url, auth_token=KEY, max_retries=0)
    assert api.messages.create(model="hello", max_tokens=4, messages=ASK).content


def test_a_key_outside_its_models_raises_permission_denied(server: RunningServer) -> None:
    with pytest.raises(anthropic.PermissionDeniedError) as caught:
        client(server, NARROW).messages.create(model="hello", max_tokens=4, messages=ASK)
    assert caught.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_an_unknown_model_raises_not_found(server: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(server).messages.create(model="nope", max_tokens=4, messages=ASK)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_a_missing_max_tokens_is_a_400_in_anthropics_envelope(server: RunningServer) -> None:
    body = {"model": "hello", "messages": ASK}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


def test_unsupported_fields_are_named(server: RunningServer) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(server).messages.create(
            model="hello",
            max_tokens=4,
            messages=ASK,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )
    assert caught.value.body["error"]["message"].startswith("thinking.type: ")  # type: ignore[index]


def test_an_unknown_route_below_messages_is_anthropic_shaped(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/messages/batches", json={}, headers={"x-api-key": KEY}
    )
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_the_openai_routes_keep_openais_envelope(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "hello"},
        headers={"x-api-key": KEY},
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"} and response.json()["error"]["param"] == "messages"


def test_rpm_limits_apply(server: RunningServer) -> None:
    api = client(server, SLOW)
    api.messages.create(model="hello", max_tokens=4, messages=ASK)
    with pytest.raises(anthropic.RateLimitError) as caught:
        api.messages.create(model="hello", max_tokens=4, messages=ASK)
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers["retry-after"]


def test_tokens_are_counted_and_requests_logged(server: RunningServer) -> None:
    def counted() -> float:
        return server.metric("appliance_tokens_total", model="hello")

    def access_lines() -> list[dict[str, object]]:
        return server.events("request", path="/v1/messages")

    before = counted()
    lines_before = len(access_lines())
    reply = client(server).messages.create(model="hello", max_tokens=16, messages=ASK)
    with client(server).messages.stream(model="hello", max_tokens=16, messages=ASK) as stream:
        stream.until_done()
    used = reply.usage.input_tokens + reply.usage.output_tokens
    assert counted() - before == 2 * used
    # Access lines are written once the response has gone out: a moment after.
    lines = until(access_lines, accept=lambda found: len(found) >= lines_before + 2)
    assert {(e.get("model"), e.get("stream"), e.get("key_name")) for e in lines[-2:]} == {
        ("hello", False, "ci"),
        ("hello", True, "ci"),
    }


def test_an_upstream_gets_an_ordinary_chat_request(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.requests.clear()
    reply = client(server).messages.create(
        model="proxied",
        max_tokens=20,
        system="You are terse.",
        messages=ASK,
        stop_sequences=["END"],
        metadata={"user_id": "user-7"},
        extra_body={"temperature": 0.2, "top_k": 5},
    )
    strictly(types.Message, reply.model_dump(mode="json", exclude_unset=True))
    assert reply.content[0].text == "fake reply"  # type: ignore[union-attr]
    assert reply.usage.input_tokens == PROMPT_TOKENS
    (seen,) = upstream.requests
    assert seen.path == "chat/completions"
    assert seen.body == {
        "model": "ok",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi there"},
        ],
        "max_tokens": 20,
        "stop": ["END"],
        "temperature": 0.2,
        "top_k": 5,
        "user": "user-7",
    }
    assert "x-api-key" not in {name.lower() for name in seen.headers}


def test_an_upstream_stream_comes_back_as_anthropic_events(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    upstream.requests.clear()
    with client(server).messages.stream(model="proxied", max_tokens=20, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "c0 c1 c2 "
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == PROMPT_TOKENS and final.usage.output_tokens == 3
    assert upstream.requests[0].body["stream"] is True


def test_a_stream_that_breaks_ends_with_an_error_event(server: RunningServer) -> None:
    body = {"model": "breaks", "max_tokens": 20, "stream": True, "messages": ASK}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY})
    events = sse_events(response.text)
    assert [name for name, _ in events][-1] == "error"
    assert events[-1][1]["error"]["type"] == "api_error"
    with (
        pytest.raises(anthropic.APIStatusError),
        client(server).messages.stream(model="breaks", max_tokens=20, messages=ASK) as stream,
    ):
        stream.until_done()


def test_count_tokens_is_what_the_model_reads(server: RunningServer) -> None:
    api = client(server)
    counted = api.messages.count_tokens(model="proxied", system="You are terse.", messages=ASK)
    assert counted.input_tokens == PROMPT_TOKENS
    reply = api.messages.create(model="hello", max_tokens=4, messages=ASK)
    assert api.messages.count_tokens(model="hello", messages=ASK).input_tokens == (
        reply.usage.input_tokens
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = st.sampled_from(
    [
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "metadata",
        "stream",
        "thinking",
        "output_config",
    ]
)
_BLOCK = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "document"])},
    optional={
        "text": _JSON,
        "source": _JSON,
        "id": _JSON,
        "name": _JSON,
        "input": _JSON,
        "tool_use_id": _JSON,
        "content": _JSON,
    },
)
_MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]),
        "content": st.one_of(st.text(max_size=8), st.lists(_BLOCK, max_size=3), _JSON),
    }
)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.dictionaries(_FIELDS, _JSON, max_size=3),
    messages=st.lists(_MESSAGE, min_size=0, max_size=3),
)
def test_fuzzed_requests_never_fail_the_server(
    server: RunningServer, changes: dict[str, Any], messages: list[Any]
) -> None:
    body: dict[str, Any] = {"model": "echo", "max_tokens": 8, "messages": messages or ASK}
    body.update(changes)
    response = httpx.post(
        f"{server.base_url}/v1/messages", json=body, headers={"x-api-key": KEY}, timeout=10
    )
    assert response.status_code < 500, response.text
    if response.status_code == 200:
        if response.headers["content-type"].startswith("text/event-stream"):
            check_stream(sse_events(response.text))
        else:
            strictly(types.Message, response.json())
    else:
        envelope = response.json()
        assert envelope["type"] == "error" and set(envelope) == {"type", "error"}
        assert set(envelope["error"]) == {"type", "message"}
