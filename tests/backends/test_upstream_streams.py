"""Upstream streams as real servers write them, through every API, with the real SDKs.

Line endings, junk events, a missing ``[DONE]``, a body cut short without a word, an
error reported inside the stream (as OpenAI, TGI and vLLM write it), a corrupt chunk:
chat (openai SDK), Responses (openai SDK) and Messages (anthropic SDK) must all see the
whole reply or a clear API error, never a truncated reply passed off as complete nor a
parse error inside the SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import cluster_config, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer

KEY = "stream-key-789"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]

UPSTREAMS = {
    "up-cr": "ok+cr+dribble",
    "up-nodone": "ok+nodone",
    "up-junk": "ok+junk+crlf",
    "up-truncated": "truncated",
    "up-error": "error-mid-stream",
    "up-error-tgi": "error-mid-stream+tgi",
    "up-error-vllm": "error-mid-stream+vllm",
    "up-corrupt": "corrupt-chunk",
}
KINDS = {
    "up-truncated": "UpstreamConnectionError",
    "up-error": "UpstreamStreamError",
    "up-error-tgi": "UpstreamStreamError",
    "up-error-vllm": "UpstreamStreamError",
    "up-corrupt": "UpstreamError",
}
WHOLE = ["up-cr", "up-nodone", "up-junk"]
ERRORS = {
    "up-truncated": "ended the stream before the reply was finished",
    "up-error": "The model is overloaded",
    "up-error-tgi": "out of memory",
    "up-error-vllm": "KV cache is full",
    "up-corrupt": "not valid JSON",
}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, start_server: Callable[..., RunningServer]) -> RunningServer:
    models = [
        {"name": name, "backend": "openai", "options": {"base_url": upstream.base_url, "model": m}}
        for name, m in UPSTREAMS.items()
    ]
    return start_server(cluster_config(*models, auth={"api_keys": [{"name": "t", "key": KEY}]}))


def chat_client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0)


@pytest.mark.parametrize("model", WHOLE)
def test_chat_streams_arrive_whole(server: RunningServer, model: str) -> None:
    stream = chat_client(server).chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "c0 c1 c2 "
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3


def raw_stream(server: RunningServer, model: str) -> list[Any]:
    """The payloads of a chat stream, as the bytes came."""
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model, "messages": MESSAGES, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=10,
    )
    return sse_payloads(response.text)


@pytest.mark.parametrize("model", WHOLE)
def test_raw_chat_streams_carry_only_valid_chunks(server: RunningServer, model: str) -> None:
    payloads = raw_stream(server, model)
    assert payloads[-1] == "[DONE]"
    for chunk in payloads[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize("model", list(ERRORS))
def test_chat_streams_that_fail_raise_an_api_error(server: RunningServer, model: str) -> None:
    stream = chat_client(server).chat.completions.create(
        model=model, messages=MESSAGES, stream=True
    )
    text = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
    assert ERRORS[model] in caught.value.message
    assert text.startswith("c0 ")  # what came before the failure was relayed
    failed = server.events("stream_failed")
    assert failed and failed[-1]["error"] == KINDS[model]
    counted = server.metric("appliance_stream_failures_total", model=model, error=KINDS[model])
    assert counted >= 1  # an operator can alert on it: the request itself counted as 200


@pytest.mark.parametrize("model", ["up-error", "up-error-vllm"])
def test_the_upstreams_error_type_and_code_reach_the_client(
    server: RunningServer, model: str
) -> None:
    payloads = raw_stream(server, model)
    assert payloads[-1] == "[DONE]"
    error = payloads[-2]["error"]
    assert_valid("ErrorResponse", payloads[-2])
    if model == "up-error":
        assert (error["type"], error["code"]) == ("server_error", "overloaded")
    else:
        assert error["type"] == "BadRequestError"
    assert sum("error" in p for p in payloads if isinstance(p, dict)) == 1  # not relayed twice


def test_responses_streams_end_complete_or_failed(server: RunningServer) -> None:
    client = chat_client(server)
    with client.responses.stream(model="up-nodone", input="hi") as stream:
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "c0 c1 c2 "
    for model, words in ERRORS.items():
        events = list(client.responses.create(model=model, input="hi", stream=True))
        kinds = [event.type for event in events]
        assert kinds[-1] == "response.failed", (model, kinds)
        assert "response.completed" not in kinds
        failed = next(event for event in events if event.type == "error")
        assert words in failed.message, model


def test_messages_streams_end_complete_or_with_an_error(server: RunningServer) -> None:
    client = anthropic.Anthropic(base_url=server.base_url, api_key=KEY, max_retries=0)
    with client.messages.stream(
        model="up-cr", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "end_turn"
    assert "".join(b.text for b in final.content if b.type == "text") == "c0 c1 c2 "
    for model, words in ERRORS.items():
        with (
            pytest.raises(anthropic.APIStatusError) as caught,
            client.messages.stream(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            ) as stream,
        ):
            stream.get_final_message()
        assert words in str(caught.value), model


def test_the_server_keeps_serving_and_nothing_stays_in_flight(server: RunningServer) -> None:
    reply = chat_client(server).chat.completions.create(model="up-nodone", messages=MESSAGES)
    assert reply.choices[0].message.content == "fake reply"
    status = httpx.get(f"{server.base_url}/status.json", timeout=10).json()
    models = {m["name"]: m for m in status["models"]}
    assert set(models) == set(UPSTREAMS)
    assert all(m["in_flight"] == 0 and m["queued"] == 0 for m in models.values()), models
