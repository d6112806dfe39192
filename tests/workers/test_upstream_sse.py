"""Reading an upstream's SSE body: every line ending, every split, every ending."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson
import pytest
import structlog

from appliance.errors import UpstreamConnectionError, UpstreamStreamError
from appliance.workers.upstream_sse import MAX_LINE, payloads

CHUNK = b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
FINISH = b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'


def read(pieces: Iterable[bytes]) -> list[bytes]:
    """What :func:`payloads` makes of a body that arrives as ``pieces``."""
    queue = [piece for piece in pieces if piece]

    async def next_piece() -> bytes:
        return queue.pop(0) if queue else b""

    async def collect() -> list[bytes]:
        return [payload async for payload in payloads(next_piece)]

    return asyncio.run(collect())


def events(*payloads: bytes, end: bytes = b"\n") -> bytes:
    return b"".join(b"data: " + p + end + end for p in payloads)


def test_a_plain_stream_ends_at_done_and_ignores_what_follows() -> None:
    body = events(CHUNK, FINISH) + b"data: [DONE]\n\n" + events(CHUNK)
    assert read([body]) == [CHUNK, FINISH]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_every_line_ending_and_every_split_reads_the_same(newline: bytes) -> None:
    """A two-line event (pretty-printed JSON), comments, event and id lines, ``data:``
    without a space: split into two reads at every byte, and read one byte at a time."""
    pretty = b'{"choices": [\n  {"index": 0, "delta": {"content": "a"}, "finish_reason": null}\n]}'
    lines = [
        b": keep-alive comment",
        b"",
        b"event: chunk",
        b"id: 1",
        b"data: " + pretty.split(b"\n")[0],
        b"data: " + pretty.split(b"\n")[1],  # one space is taken, the indent kept
        b"data:" + pretty.split(b"\n")[2],
        b"",
        b"data: " + FINISH,
        b"",
        b"data: [DONE]",
        b"",
    ]
    body = newline.join(lines)
    expected = [pretty, FINISH]
    assert read([body]) == expected
    for cut in range(1, len(body)):
        assert read([body[:cut], body[cut:]]) == expected, f"split at {cut}"
    assert read([body[i : i + 1] for i in range(len(body))]) == expected


def test_a_crlf_split_between_its_two_bytes_is_one_line_end() -> None:
    """Were the CR read as a line end of its own, the LF would end the event early and the
    second data line would become an event of its own."""
    body = b'data: {"a":\r\ndata: 1}\r\n\r\n' + b"data: " + FINISH + b"\r\n\r\n"
    cut = body.index(b"\r\n") + 1
    assert read([body[:cut], body[cut:]]) == [b'{"a":\n1}', FINISH]


def test_a_server_that_never_sends_done_is_served_to_its_finish() -> None:
    assert read([events(CHUNK, FINISH)]) == [CHUNK, FINISH]
    assert read([events(CHUNK, FINISH, USAGE)]) == [CHUNK, FINISH, USAGE]
    completed = b'{"type":"response.completed","response":{"id":"r"}}'
    assert read([events(b'{"type":"response.created"}', completed)])[-1] == completed


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    assert read([events(CHUNK) + b"data: " + FINISH]) == [CHUNK, FINISH]


@pytest.mark.parametrize(
    "body",
    [
        events(CHUNK, CHUNK),
        b"",
        events(b'{"type":"response.output_text.delta","delta":"a"}'),
    ],
    ids=["chat-cut-short", "empty-body", "responses-cut-short"],
)
def test_a_stream_cut_short_without_a_word_is_an_error(body: bytes) -> None:
    with pytest.raises(UpstreamConnectionError, match="before the reply was finished"):
        read([body])


def test_empty_and_non_json_payloads_are_skipped_and_logged_once() -> None:
    body = b"data:\n\ndata: keep-alive\n\ndata: \n\n" + events(CHUNK) + b"data: ping\n\n"
    body += events(FINISH) + b"data: [DONE]\n\n"
    with structlog.testing.capture_logs() as logs:
        assert read([body]) == [CHUNK, FINISH]
    skipped = [entry for entry in logs if entry["event"] == "upstream_sent_non_json"]
    assert len(skipped) == 1 and skipped[0]["start"] == "keep-alive"


@pytest.mark.parametrize(
    ("error", "message", "kind", "code"),
    [
        (
            {"error": {"message": "overloaded", "type": "server_error", "code": "busy"}},
            "overloaded",
            "server_error",
            "busy",
        ),
        ({"error": "Input validation error", "error_type": "validation"}, None, "validation", None),
        (
            {"object": "error", "message": "KV cache full", "type": "BadRequestError", "code": 400},
            "KV cache full",
            "BadRequestError",
            None,
        ),
    ],
    ids=["openai", "tgi", "vllm"],
)
def test_an_error_inside_the_stream_raises_with_the_upstreams_words(
    error: dict[str, object], message: str | None, kind: str, code: str | None
) -> None:
    body = events(CHUNK, orjson.dumps(error), CHUNK, FINISH)
    seen: list[bytes] = []

    async def collect() -> None:
        queue = [body]

        async def next_piece() -> bytes:
            return queue.pop(0) if queue else b""

        async for payload in payloads(next_piece):
            seen.append(payload)

    with pytest.raises(UpstreamStreamError) as caught:
        asyncio.run(collect())
    assert seen == [CHUNK]  # what came before the error, and nothing after it
    assert caught.value.message == (message or error["error"])
    assert caught.value.type == kind
    assert caught.value.code == (code or "upstream_error")
    assert caught.value.status == 502


def test_a_chunk_that_only_mentions_an_error_is_a_chunk() -> None:
    mentions = orjson.dumps(
        {"choices": [{"index": 0, "delta": {"content": '{"error": "x"}'}}], "error": None}
    )
    field = b'{"choices":[{"index":0,"delta":{"content":"error"}}],"error":null}'
    assert read([events(mentions, field, FINISH)]) == [mentions, field, FINISH]


def test_a_line_over_the_limit_is_an_error_before_it_ends() -> None:
    piece = b"x" * 65536
    pieces = [b"data: "] + [piece] * (MAX_LINE // len(piece) + 2)
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read(pieces)
