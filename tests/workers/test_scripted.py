"""The scripted backend: deterministic, and honest about max_tokens and stop."""

from __future__ import annotations

import base64
import struct
from typing import Any

import orjson
import pytest

from appliance.config import ScriptedModel
from appliance.errors import InvalidRequestError
from appliance.protocol import Endpoint
from appliance.workers.scripted import ScriptedWorker
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
    out = await reply(worker(dimensions=8), Endpoint.EMBEDDINGS, embed_request(dimensions=4.0))
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
