"""What a plain reply names as its model (``gen_ai.response.model``), read from its bytes
or from the reply as the usage read parsed it, and that a traced plain reply is parsed once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from appliance.clip import ECHO_CHARS
from appliance.http.charge import Charge, TracedCharge
from appliance.telemetry.genai import PARSED_UP_TO, output_messages, reply_model
from appliance.wire.usage import UNPARSED, Usage


def test_the_reply_model_is_the_top_level_one_not_a_nested_echo() -> None:
    # A Responses reply echoes the caller's metadata after its own model, and a tool may
    # name a model of its own: neither is the model that replied.
    reply = {
        "id": "resp_1",
        "model": "served-model",
        "output": [{"type": "message", "content": []}],
        "tools": [{"type": "image_generation", "model": "gpt-image-1"}],
        "metadata": {"model": "client-chosen"},
    }
    body = orjson.dumps(reply)
    assert reply_model(body) == "served-model"
    assert reply_model(body, orjson.loads(body)) == "served-model"


def test_a_reply_naming_no_model_or_not_json_names_none() -> None:
    assert reply_model(orjson.dumps({"id": "x", "metadata": {"model": "client"}})) is None
    assert reply_model(orjson.dumps({"model": 7})) is None
    assert reply_model(b"not json") is None


def test_a_long_model_name_is_clipped_as_a_streams_is() -> None:
    named = reply_model(orjson.dumps({"model": "m" * 5000}))
    assert named is not None and named.startswith("m" * ECHO_CHARS) and len(named) < 400


def test_a_reply_too_large_to_parse_is_read_from_its_end() -> None:
    vectors = [{"object": "embedding", "index": i, "embedding": [0.125] * 64} for i in range(700)]
    body = orjson.dumps({"object": "list", "data": vectors, "model": "embedder"})
    assert len(body) > PARSED_UP_TO
    assert reply_model(body) == "embedder"


def test_a_reply_already_parsed_is_read_from_its_parse_not_its_bytes() -> None:
    assert reply_model(b"not json", {"model": "parsed"}) == "parsed"
    assert reply_model(orjson.dumps({"model": "bytes"}), None) is None  # parsed: not JSON
    assert reply_model(orjson.dumps({"model": "bytes"}), UNPARSED) == "bytes"
    choices = [{"message": {"content": "hi"}}]
    assert (
        output_messages(b"not json", _unchanged, {"choices": choices})
        == orjson.dumps(choices).decode()
    )


class CountingLoads:
    """``orjson.loads``, counting the bytes it was given to parse."""

    def __init__(self) -> None:
        self.loads = orjson.loads
        self.parsed = 0

    def __call__(self, data: bytes) -> Any:
        self.parsed += len(data)
        return self.loads(data)


def chat_reply(content: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": "served-model",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "metadata": {"model": "client-chosen"},
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }
    )


REQUEST = {"model": "m", "messages": [{"role": "user", "content": "Say hello."}]}


def test_a_traced_plain_reply_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = CountingLoads()
    monkeypatch.setattr(orjson, "loads", parser)
    body = chat_reply("hello " * 100)
    assert len(body) < 4096  # parsed whole to read its usage
    untraced = Charge("m", REQUEST)
    assert untraced.reply(body) == Usage(11, 7, 18)
    assert parser.parsed == len(body)
    parser.parsed = 0
    traced = TracedCharge("m", REQUEST)
    assert traced.reply(body) == Usage(11, 7, 18)
    assert traced.response_model == "served-model"
    assert output_messages(body, _unchanged, traced.parsed) is not None  # captured content
    assert parser.parsed == len(body)  # the usage read's parse served the model and content


def test_a_larger_traced_reply_is_parsed_whole_once(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = CountingLoads()
    monkeypatch.setattr(orjson, "loads", parser)
    body = chat_reply("hello " * 2000)
    assert 4096 < len(body) <= PARSED_UP_TO  # its usage is read from its end
    traced = TracedCharge("m", REQUEST)
    assert traced.reply(body) == Usage(11, 7, 18)
    assert traced.response_model == "served-model"
    assert len(body) < parser.parsed < len(body) + 100  # the whole once, and the usage


def _unchanged(value: Any) -> Any:
    return value
