"""The official openai client against the real server (Granian on a loopback port)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer

KEY = "abc"


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("test-model-name-0", ["Hello", " world."], workers=2),
            scripted("test-model-name-1", ["你好，我是", "张三。"], workers=2),
            scripted("slow", ["a", "b", "c", "d"], options={"delay_ms": 150}),
            scripted("embed", type="embedding", options={"dimensions": 8}),
            auth={"api_keys": [{"name": "ci", "key": KEY}, {"name": "other", "key": "xx"}]},
            routes=[{"alias": "chat", "targets": ["test-model-name-0"]}],
        )
    )


def client(server: RunningServer, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def async_client(server: RunningServer, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/api/v1", api_key=key, max_retries=0)


MESSAGES: list[Any] = [{"role": "user", "content": "Hello! What is your name?"}]


def test_sync_plain(server: RunningServer) -> None:
    reply = client(server).chat.completions.create(model="test-model-name-0", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello world."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.completion_tokens == 2
    assert_valid("CreateChatCompletionResponse", reply.model_dump(mode="json", exclude_unset=True))


def test_sync_stream(server: RunningServer) -> None:
    stream = client(server).chat.completions.create(
        model="test-model-name-1", messages=MESSAGES, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "你好，我是张三。"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("test-model-name-0", "Hello world."),
        ("test-model-name-1", "你好，我是张三。"),
    ],
)
async def test_async_plain(server: RunningServer, model: str, expected: str) -> None:
    async with async_client(server) as api:
        reply = await api.chat.completions.create(model=model, messages=MESSAGES)
    assert reply.choices[0].message.content == expected


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("test-model-name-0", "Hello world."),
        ("test-model-name-1", "你好，我是张三。"),
    ],
)
async def test_async_stream(server: RunningServer, model: str, expected: str) -> None:
    async with async_client(server) as api:
        stream = await api.chat.completions.create(model=model, messages=MESSAGES, stream=True)
        text = ""
        async for chunk in stream:
            assert_valid(
                "CreateChatCompletionStreamResponse",
                chunk.model_dump(mode="json", exclude_unset=True),
            )
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert text == expected


async def test_stream_usage_comes_last_when_asked(server: RunningServer) -> None:
    async with async_client(server) as api:
        stream = await api.chat.completions.create(
            model="chat",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_chunks_arrive_as_they_are_made(server: RunningServer) -> None:
    stream = client(server).chat.completions.create(model="slow", messages=MESSAGES, stream=True)
    arrivals = [
        time.monotonic() for chunk in stream if chunk.choices and chunk.choices[0].delta.content
    ]
    assert len(arrivals) == 4
    # 150 ms apart as made: the first arrives about 0.45 s before the last, where a
    # buffered reply would bring all four at once. (The spread, not each gap: a busy
    # machine may hold one chunk back and hand it over with the next.)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] > 0.2, gaps


def test_n_gives_one_choice_per_index(server: RunningServer) -> None:
    reply = client(server).chat.completions.create(
        model="test-model-name-0", messages=MESSAGES, n=3
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert {c.message.content for c in reply.choices} == {"Hello world."}


def test_completions_legacy_route(server: RunningServer) -> None:
    reply = client(server).completions.create(model="test-model-name-0", prompt="Say hi")
    assert reply.choices[0].text == "Hello world."
    assert_valid("CreateCompletionResponse", reply.model_dump(mode="json", exclude_unset=True))


def test_embeddings_default_encoding_is_base64_and_decodes(server: RunningServer) -> None:
    # The SDK asks for base64 unless told otherwise, and decodes it to floats.
    reply = client(server).embeddings.create(model="embed", input=["red apple", "blue sky"])
    assert [d.index for d in reply.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in reply.data)
    norm = sum(v * v for v in reply.data[0].embedding)
    assert abs(norm - 1.0) < 1e-5


def test_models_list(server: RunningServer) -> None:
    ids = [m.id for m in client(server).models.list()]
    assert ids == ["test-model-name-0", "test-model-name-1", "slow", "embed", "chat"]


def test_wrong_key_raises_authentication_error(server: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client(server, key="error_api_key").chat.completions.create(
            model="test-model-name-0", messages=MESSAGES
        )
    assert caught.value.code == "invalid_api_key"


def test_unknown_model_raises_not_found(server: RunningServer) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(server).chat.completions.create(model="gpt-99", messages=MESSAGES)
    assert caught.value.code == "model_not_found"
    assert "test-model-name-0" in str(caught.value)
