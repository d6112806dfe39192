"""What a plain reply names as its model (``gen_ai.response.model``), read from its bytes."""

from __future__ import annotations

import orjson

from appliance.clip import ECHO_CHARS
from appliance.telemetry.genai import PARSED_UP_TO, reply_model


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
    assert reply_model(orjson.dumps(reply)) == "served-model"


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
