"""Reading usage from replies and chunks in every JSON layout, and estimating it."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from appliance.errors import UpstreamError
from appliance.wire.usage import (
    UNPARSED,
    StreamTally,
    Usage,
    estimate,
    of_reply,
    read_reply,
    usage_of,
)

REPLY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "What is it?"}]}


def layouts(obj: Any) -> list[bytes]:
    """The ways real servers write the same JSON."""
    return [
        orjson.dumps(obj),
        json.dumps(obj).encode(),  # "usage": {
        json.dumps(obj, indent=2).encode(),  # OpenAI's API
        json.dumps(obj, indent="\t", separators=(" , ", " : ")).encode(),
    ]


@pytest.mark.parametrize("body", layouts(REPLY))
def test_reply_usage_is_read_in_every_layout(body: bytes) -> None:
    assert of_reply(body, REQUEST) == Usage(11, 7, 18)


def test_usage_first_in_the_object_is_read() -> None:
    reordered = {"usage": REPLY["usage"], **{k: v for k, v in REPLY.items() if k != "usage"}}
    assert of_reply(json.dumps(reordered, indent=1).encode(), REQUEST) == Usage(11, 7, 18)


def test_the_word_usage_inside_content_is_not_usage() -> None:
    reply = {
        "choices": [{"message": {"content": '"usage":{"prompt_tokens": 999}'}}],
        "usage": None,
    }
    usage = of_reply(orjson.dumps(reply), REQUEST)
    assert usage.estimated
    assert usage.prompt < 100 and usage.completion < 100


def test_missing_total_is_the_sum_and_rerank_total_is_read() -> None:
    assert usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == Usage(3, 4, 7)
    assert usage_of({"usage": {"total_tokens": 9}}) == Usage(9, 0, 9)


@pytest.mark.parametrize(
    "raw", [None, "x", [], {}, {"prompt_tokens": "3"}, {"prompt_tokens": True}]
)
def test_no_usable_usage_is_none(raw: Any) -> None:
    assert usage_of({"usage": raw}) is None


def test_reply_without_usage_is_estimated_from_text() -> None:
    reply = {"choices": [{"message": {"content": "x" * 40}}]}
    usage = of_reply(orjson.dumps(reply), {"messages": [{"role": "user", "content": "y" * 80}]})
    assert usage == Usage(20, 10, 30, estimated=True)


def test_estimate_counts_parts_tool_calls_and_token_arrays() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a" * 8}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"function": {"name": "f" * 4, "arguments": "{" * 4}}],
            },
        ],
    }
    assert estimate(body, 0).prompt == 4
    assert estimate({"prompt": [[1, 2, 3], [4]]}, 0).prompt == 4
    assert estimate({"input": ["abcd", "efgh"]}, 0).prompt == 2


def chunk(content: str | None, **extra: Any) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {"id": "c", "object": "chat.completion.chunk", "choices": [{"delta": delta}], **extra}


def run(tally: StreamTally, chunks: list[dict[str, Any]], dump: Any) -> list[Any]:
    shown = [tally.chunk(dump(c)) for c in chunks]
    return [orjson.loads(s) for s in shown if s is not None]


DUMPS = [orjson.dumps, lambda o: json.dumps(o).encode(), lambda o: json.dumps(o, indent=2).encode()]
USAGE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
WITH_USAGE_CHUNK = [
    chunk("a", usage=None),
    chunk("b", usage=None),
    {"id": "c", "choices": [], "usage": USAGE},
]


@pytest.mark.parametrize("dump", DUMPS)
def test_stream_usage_is_hidden_when_the_client_did_not_ask(dump: Any) -> None:
    tally = StreamTally(client_asked=False)
    shown = run(tally, WITH_USAGE_CHUNK, dump)
    assert shown == [chunk("a"), chunk("b")]
    assert tally.result(REQUEST) == Usage(5, 2, 7)


@pytest.mark.parametrize("dump", DUMPS)
def test_stream_usage_is_kept_when_the_client_asked(dump: Any) -> None:
    tally = StreamTally(client_asked=True)
    shown = run(tally, WITH_USAGE_CHUNK, dump)
    assert shown == WITH_USAGE_CHUNK
    assert tally.result(REQUEST) == Usage(5, 2, 7)


def test_usage_on_the_finish_chunk_keeps_the_chunk() -> None:
    tally = StreamTally(client_asked=False)
    last = {"id": "c", "choices": [{"delta": {}, "finish_reason": "stop"}], "usage": USAGE}
    shown = run(tally, [chunk("a"), last], orjson.dumps)
    assert shown[-1] == {"id": "c", "choices": [{"delta": {}, "finish_reason": "stop"}]}
    assert tally.result(REQUEST).total == 7


def test_running_usage_on_every_chunk_counts_the_last() -> None:
    tally = StreamTally(client_asked=False)
    running = [
        chunk("a", usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
        chunk("b", usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}),
    ]
    assert run(tally, running, orjson.dumps) == [chunk("a"), chunk("b")]
    assert tally.result(REQUEST) == Usage(5, 2, 7)


def test_stream_without_usage_is_estimated_from_what_was_relayed() -> None:
    tally = StreamTally(client_asked=False)
    run(tally, [chunk("x" * 20), chunk("y" * 20)], orjson.dumps)
    tally.finished()
    assert tally.result(REQUEST) == Usage(3, 10, 13, estimated=True)


@pytest.mark.parametrize("payload", [b'{"choices": [{"delta"', b"[1, 2]", b"not json"])
def test_a_chunk_that_is_not_a_json_object_ends_the_stream(payload: bytes) -> None:
    """Relayed, it would make the client's SDK fail to parse it (not an API error)."""
    tally = StreamTally(client_asked=False)
    with pytest.raises(UpstreamError, match="not valid JSON"):
        tally.chunk(payload)


def test_a_usage_chunk_without_choices_gets_them_as_openai_writes_it() -> None:
    """The openai SDK's ``chunk.choices`` must be a list the client can iterate."""
    tally = StreamTally(client_asked=True)
    bare = {"id": "c", "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    shown = tally.chunk(orjson.dumps(bare))
    assert shown is not None and orjson.loads(shown) == {**bare, "choices": []}
    assert tally.result({}) == Usage(1, 2, 3)


def test_a_malformed_usage_chunk_is_hidden_too() -> None:
    tally = StreamTally(client_asked=False)
    odd = {"id": "c", "choices": [], "usage": {"total_tokens": "15"}}
    assert tally.chunk(orjson.dumps(odd)) is None


def test_a_stream_cut_short_is_estimated_as_incomplete() -> None:
    cut, whole = StreamTally(client_asked=False), StreamTally(client_asked=False)
    for tally in (cut, whole):
        tally.chunk(orjson.dumps(chunk("x" * 8)))
    whole.finished()
    assert cut.result(REQUEST).estimated and not cut.result(REQUEST).complete
    assert whole.result(REQUEST).complete


def big_embeddings(dump: Any, **usage: Any) -> bytes:
    data = [{"object": "embedding", "index": i, "embedding": [0.5] * 384} for i in range(20)]
    return dump({"object": "list", "data": data, "model": "m", **usage})


@pytest.mark.parametrize("dump", DUMPS)
def test_usage_of_a_large_reply_is_read_from_its_tail(dump: Any) -> None:
    body = big_embeddings(dump, usage={"prompt_tokens": 40, "total_tokens": 40})
    assert len(body) > 10_000
    assert of_reply(body, {"input": ["x"]}) == Usage(40, 0, 40)


def test_a_usage_key_inside_a_string_of_a_large_reply_is_not_usage() -> None:
    decoy = '"usage": {"prompt_tokens": 999}'
    body = big_embeddings(orjson.dumps, note=decoy)
    usage = of_reply(body, {"input": ["abcd"]})
    assert usage.estimated and usage.prompt == 1
    body = big_embeddings(orjson.dumps, usage={"prompt_tokens": 7, "total_tokens": 7}, note=decoy)
    assert of_reply(body, {"input": ["abcd"]}) == Usage(7, 0, 7)


def test_read_reply_reads_the_usage_of_reply_reads_and_hands_on_its_parse() -> None:
    small = orjson.dumps(REPLY)
    unstated = orjson.dumps({"choices": [{"message": {"content": "x" * 40}}]})
    for body in (small, unstated):
        assert read_reply(body, REQUEST) == (of_reply(body, REQUEST), orjson.loads(body))
    assert read_reply(b"not json", REQUEST)[1] is None
    # A large reply's usage is read from its end: nothing was parsed to hand on...
    large = big_embeddings(orjson.dumps, usage={"prompt_tokens": 40, "total_tokens": 40})
    assert read_reply(large, REQUEST) == (Usage(40, 0, 40), UNPARSED)
    # ... unless it states none there, and the whole of it was parsed to estimate it.
    large = big_embeddings(orjson.dumps)
    assert read_reply(large, {"input": ["x"]}) == (
        of_reply(large, {"input": ["x"]}),
        orjson.loads(large),
    )
