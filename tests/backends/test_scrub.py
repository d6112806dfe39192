"""The scrubber of a worker's secrets from its upstream's words, in every shape they come.

The real server's side (every route, both clients, the logs) is
``tests/backends/test_upstream_secrets.py``; here the shapes one fake cannot write: a key
escaped inside JSON text, llama.cpp's ``error:`` line, a short password, the type and
code fields.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest

from appliance.backends.scrub import Scrubber, without_userinfo
from appliance.backends.upstream_sse import payloads
from appliance.errors import UpstreamStatusError, UpstreamStreamError
from appliance.runtime.redaction import REDACTED

KEY = "sk-proj/SECRET+0123456789=="  # a "/" that some servers write as "\/"


def stream_error(body: bytes, scrub: Scrubber) -> UpstreamStreamError:
    """The error a stream whose body is ``body`` raises."""
    pieces = [body]

    async def read() -> bytes:
        return pieces.pop() if pieces else b""

    async def drain() -> None:
        async for _ in payloads(read, 1, scrub):
            pass

    with pytest.raises(UpstreamStreamError) as caught:
        asyncio.run(drain())
    return caught.value


@pytest.mark.parametrize(
    "line",
    [
        b'data: {"error": {"message": "bad key ' + KEY.encode() + b'"}}\n\n',
        b'error: {"message": "bad key ' + KEY.replace("/", "\\/").encode() + b'"}\n\n',
        b'data: {"error": "bad key ' + KEY.encode() + b'", "error_type": "auth"}\n\n',
    ],
    ids=["openai", "llama.cpp-escaped", "tgi"],
)
def test_a_stream_error_loses_the_key_and_keeps_its_words(line: bytes) -> None:
    error = stream_error(line, Scrubber([KEY]))
    assert error.message == f"bad key {REDACTED}" and str(error) == error.message


def test_without_a_scrubber_a_stream_error_is_as_the_upstream_wrote_it() -> None:
    line = b'data: {"error": {"message": "bad key ' + KEY.encode() + b'"}}\n\n'
    assert KEY in stream_error(line, Scrubber()).message


def test_a_relayed_payload_is_scrubbed_however_json_escaped_the_key() -> None:
    scrub = Scrubber([KEY, "pässword-0123"])
    raw = orjson.dumps({"type": "error", "message": f"{KEY} / pässword-0123"})
    ascii_escaped = b'{"type":"error","message":"p\\u00e4ssword-0123"}'
    assert scrub.payload(raw) == f'{{"type":"error","message":"{REDACTED} / {REDACTED}"}}'.encode()
    assert scrub.payload(ascii_escaped) == f'{{"type":"error","message":"{REDACTED}"}}'.encode()
    assert orjson.loads(scrub.payload(raw.replace(b"/", b"\\/")))["message"].count(REDACTED) == 2


def test_every_field_an_upstream_fills_is_scrubbed() -> None:
    error = UpstreamStatusError.of(
        400, f"no {KEY}", upstream_type=f"t-{KEY}", param=KEY, code=f"c-{KEY}"
    )
    Scrubber([KEY]).error(error)
    fields = error.envelope()["error"]
    assert fields == {
        "message": f"no {REDACTED}",
        "type": f"t-{REDACTED}",
        "param": REDACTED,
        "code": f"c-{REDACTED}",
    }


def test_a_short_secret_is_scrubbed_only_where_it_stands_alone() -> None:
    scrub = Scrubber(["pw12"])
    assert scrub.text("password pw12 refused; pw123 is not it") == (
        f"password {REDACTED} refused; pw123 is not it"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://bob:pw@h:1/v1", "http://h:1/v1"),
        ("https://token@h/v1/chat", "https://h/v1/chat"),
        ("http://h:1/v1", "http://h:1/v1"),
    ],
)
def test_a_url_is_shown_without_its_userinfo(url: str, shown: str) -> None:
    assert without_userinfo(url) == shown
