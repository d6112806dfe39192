"""Reading an upstream's SSE body: every line ending, every split, every ending."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import orjson
import pytest
import structlog

from appliance.backends.upstream_sse import MAX_EVENT, payloads
from appliance.errors import UpstreamConnectionError, UpstreamStreamError

CHUNK = b'{"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}'
FINISH = b'{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
USAGE = b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'


def read(pieces: Iterable[bytes], choices: int = 1, seen: list[bytes] | None = None) -> list[bytes]:
    """What :func:`payloads` makes of a body that arrives as ``pieces``; each payload is
    also put in ``seen`` as it comes (what came before an error raised)."""
    queue = [piece for piece in pieces if piece]
    got = [] if seen is None else seen

    async def next_piece() -> bytes:
        return queue.pop(0) if queue else b""

    async def collect() -> list[bytes]:
        async for payload in payloads(next_piece, choices):
            got.append(payload)
        return got

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
        events(USAGE, CHUNK),
        events(FINISH, USAGE, CHUNK),
    ],
    ids=[
        "chat-cut-short",
        "empty-body",
        "responses-cut-short",
        "usage-first",
        "a-chunk-after-the-end",
    ],
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
            "400",
        ),
    ],
    ids=["openai", "tgi", "vllm"],
)
def test_an_error_inside_the_stream_raises_with_the_upstreams_words(
    error: dict[str, object], message: str | None, kind: str, code: str | None
) -> None:
    seen: list[bytes] = []
    with pytest.raises(UpstreamStreamError) as caught:
        read([events(CHUNK, orjson.dumps(error), CHUNK, FINISH)], seen=seen)
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
    pieces = [b"data: "] + [piece] * (MAX_EVENT // len(piece) + 2)
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read(pieces)


def test_an_error_in_a_chunk_with_choices_raises_too() -> None:
    """OpenRouter's mid-stream error: the error beside a choice finished with "error"."""
    failed = orjson.dumps(
        {
            "error": {"code": "server_error", "message": "Provider disconnected"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    )
    with pytest.raises(UpstreamStreamError, match="Provider disconnected"):
        read([events(CHUNK, failed) + b"data: [DONE]\n\n"])


@pytest.mark.parametrize(
    "line",
    [
        b'error: {"code": 500, "message": "slot unavailable", "type": "server_error"}',
        b'{"error": {"message": "slot unavailable", "type": "server_error"}}',
    ],
    ids=["llama.cpp-error-field", "bare-json-line"],
)
def test_an_error_written_outside_data_lines_raises(line: bytes) -> None:
    with pytest.raises(UpstreamStreamError, match="slot unavailable") as caught:
        read([events(CHUNK) + line + b"\n\n"])
    assert caught.value.type == "server_error"


def _choice(index: int, finish: str | None) -> bytes:
    delta = {} if finish else {"content": f"c{index}"}
    return orjson.dumps({"choices": [{"index": index, "delta": delta, "finish_reason": finish}]})


def test_with_several_choices_every_one_must_finish_when_done_never_comes() -> None:
    whole = events(_choice(0, None), _choice(1, None), _choice(0, "stop"), _choice(1, "length"))
    assert len(read([whole], choices=2)) == 4
    cut = events(_choice(0, None), _choice(1, None), _choice(0, "stop"), _choice(1, None))
    with pytest.raises(UpstreamConnectionError, match="before the reply was finished"):
        read([cut], choices=2)


def test_an_upstream_that_ignores_n_is_served_its_one_choice() -> None:
    one = events(_choice(0, None), _choice(0, "stop"), USAGE)
    assert len(read([one], choices=2)) == 3


def test_a_usage_chunk_without_choices_after_the_finish_ends_the_reply() -> None:
    bare = b'{"id":"c","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
    assert read([events(CHUNK, FINISH, bare)]) == [CHUNK, FINISH, bare]


@pytest.mark.parametrize("failure", ["error", "response.failed"])
def test_a_responses_failure_event_is_relayed_then_the_stream_fails(failure: str) -> None:
    created = b'{"type":"response.created","response":{"id":"r","error":null}}'
    if failure == "error":
        event = b'{"type":"error","code":"server_error","message":"boom","sequence_number":1}'
    else:
        event = orjson.dumps(
            {
                "type": "response.failed",
                "response": {"id": "r", "error": {"code": "x", "message": "boom"}},
            }
        )
    seen: list[bytes] = []
    with pytest.raises(UpstreamStreamError, match="boom"):
        read([events(created, event)], seen=seen)
    assert seen == [created, event]  # the client gets the upstream's own account first


def test_an_event_ending_in_a_bare_cr_is_yielded_before_the_next_read() -> None:
    """A server that ends lines with CR alone: its event must not wait for more bytes."""
    reads: list[bytes] = [b"data: " + CHUNK + b"\r\r", b"data: " + FINISH + b"\r\r"]
    served: list[int] = []

    async def collect() -> list[tuple[int, bytes]]:
        async def next_piece() -> bytes:
            served.append(1)
            return reads.pop(0) if reads else b""

        return [(len(served), payload) async for payload in payloads(next_piece)]

    assert asyncio.run(collect()) == [(1, CHUNK), (2, FINISH)]


def test_an_event_over_the_limit_is_an_error_however_many_lines_it_takes() -> None:
    line = b"data: " + b"p" * 1000 + b"\n"
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read([b"data: {\n" + line * (MAX_EVENT // 1000 + 10) + b"data: }\n\n"])
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read([b"data: {" + b"p" * (MAX_EVENT + 10) + b"}\n\n"])  # one line, one read


def test_data_lines_without_an_event_end_count_towards_the_limit() -> None:
    """Empty ``data:`` lines that never end an event must not pile up without bound."""
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read([b"data:\n" * (MAX_EVENT + 10)])  # each counts its newline
    with pytest.raises(UpstreamConnectionError, match="oversized"):
        read([b"data:x\n" * (MAX_EVENT // 2 + 10) + b"\n"])  # joined, it would be 2x


def test_done_right_after_an_events_lines_sends_that_event_first() -> None:
    assert read([b"data: " + CHUNK + b"\ndata: " + FINISH + b"\n\n" + b"data: [DONE]\n\n"]) == [
        CHUNK + b"\n" + FINISH
    ]
    assert read([events(CHUNK) + b"data: " + FINISH + b"\ndata: [DONE]\n\n"]) == [CHUNK, FINISH]


def test_an_odd_choice_index_is_no_crash() -> None:
    odd = b'{"choices":[{"index":[0],"delta":{},"finish_reason":"stop"}]}'
    with pytest.raises(UpstreamConnectionError, match="before the reply was finished"):
        read([events(odd)], choices=2)


def test_openais_responses_error_event_with_the_error_nested_is_relayed_then_raised() -> None:
    error = {"type": "rate_limit", "code": "rate_limit_exceeded", "message": "slow down"}
    nested = orjson.dumps({"type": "error", "sequence_number": 2, "error": error})
    seen: list[bytes] = []
    created = b'{"type":"response.created","response":{"id":"r"}}'
    with pytest.raises(UpstreamStreamError, match="slow down") as caught:
        read([events(created, nested)], seen=seen)
    assert seen[-1] == nested and caught.value.code == "rate_limit_exceeded"


def test_a_response_failed_without_an_error_field_still_fails() -> None:
    failed = b'{"type":"response.failed","response":{"id":"r","status":"failed"}}'
    with pytest.raises(UpstreamStreamError):
        read([events(failed)])


def test_a_last_line_cut_off_mid_json_is_not_sent_and_the_stream_fails_as_cut() -> None:
    with pytest.raises(UpstreamConnectionError, match="before the reply was finished"):
        read([events(CHUNK) + b'data: {"choices":[{"index":0,"del'])


@pytest.mark.parametrize(
    ("data", "message", "code"),
    [
        (b'{"message":"overloaded","code":529}', "overloaded", "529"),
        (b'{"error":{"message":"overloaded","type":"overloaded_error"}}', "overloaded", None),
        (b"the model is overloaded", "the model is overloaded", None),
    ],
    ids=["fields-at-the-top", "openai-layout", "plain-text"],
)
def test_an_event_named_error_raises_whatever_its_payload(
    data: bytes, message: str, code: str | None
) -> None:
    """``event: error`` says the stream failed even when its payload is not an error
    layout we know: never relayed to the client as a chunk (it has no choices)."""
    body = events(CHUNK) + b"event: error\ndata: " + data + b"\n\n" + events(FINISH)
    seen: list[bytes] = []
    with pytest.raises(UpstreamStreamError) as caught:
        read([body], seen=seen)
    assert seen == [CHUNK]
    assert caught.value.message == message
    assert caught.value.code == (code or "upstream_error")


def test_other_event_names_and_a_responses_error_event_are_read_as_before() -> None:
    """Only an event named ``error`` is taken as one; the name holds for its own event
    only; a Responses stream's ``event: error`` is relayed first, as its other events."""
    named = b"event: message\ndata: " + CHUNK + b"\n\nevent: chunk\ndata: " + FINISH + b"\n\n"
    assert read([named + b"data: [DONE]\n\n"]) == [CHUNK, FINISH]
    event = b'{"type":"error","code":"server_error","message":"boom","sequence_number":1}'
    seen: list[bytes] = []
    with pytest.raises(UpstreamStreamError, match="boom"):
        read([b"event: error\ndata: " + event + b"\n\n"], seen=seen)
    assert seen == [event]
