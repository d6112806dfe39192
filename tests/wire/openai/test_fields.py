"""The fields each backend takes, against OpenAI's own request schemas.

``tests/http/openai_requests.json`` is OpenAI's published description of the request
bodies: when it is regenerated and OpenAI has added a field, a test here says so, and the
field is placed (taken, ignorable, or refused on purpose) rather than refused by accident.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.scripted import SCRIPTED
from appliance.wire.openai.fields import (
    LOCAL,
    OPENAI_CHAT,
    OPENAI_COMPLETIONS,
    OPENAI_EMBEDDINGS,
    Fields,
)
from appliance.wire.openai.protocol import Endpoint

SCHEMAS = json.loads((Path(__file__).parents[2] / "http" / "openai_requests.json").read_text())[
    "components"
]["schemas"]
REFUSED_ON_PURPOSE = {"CreateChatCompletionRequest": {"moderation"}}  # no moderation here


def properties(name: str) -> set[str]:
    schema = SCHEMAS[name]
    out: set[str] = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        if "$ref" in part:
            out |= properties(part["$ref"].rsplit("/", 1)[-1])
        out |= set(part.get("properties", {}))
    return out


@pytest.mark.parametrize(
    ("schema", "known"),
    [
        ("CreateChatCompletionRequest", OPENAI_CHAT),
        ("CreateCompletionRequest", OPENAI_COMPLETIONS),
        ("CreateEmbeddingRequest", OPENAI_EMBEDDINGS),
    ],
)
def test_every_field_of_openais_schema_is_known_or_refused_on_purpose(
    schema: str, known: frozenset[str]
) -> None:
    assert properties(schema) - known == REFUSED_ON_PURPOSE.get(schema, set())
    assert known <= properties(schema)  # nothing invented under OpenAI's name


def refused(fields: Fields, endpoint: Endpoint, **body: Any) -> str | None:
    error = fields.refusal(endpoint, {"model": "m", **body}, "test")
    if error is None:
        return None
    assert (error.status, error.code) == (400, "unsupported_parameter")
    assert "its backend (test) does not support it" in error.message
    return error.param


def test_a_field_a_backend_does_not_know_is_named() -> None:
    assert refused(LOCAL, Endpoint.CHAT, messages=[], foo_bar=1) == "foo_bar"
    assert refused(LOCAL, Endpoint.EMBEDDINGS, input="x", stream=True) == "stream"
    assert refused(LOCAL, Endpoint.CHAT, messages=[], min_p=0.1, user="u") is None
    assert refused(LOCAL, Endpoint.EMBEDDINGS, input="x", user="u", dimensions=8) is None


def test_a_caller_chosen_name_is_clipped() -> None:
    param = refused(LOCAL, Endpoint.CHAT, **{"x" * 10_000: 1})
    assert param is not None and len(param) < 300


def test_a_known_field_the_backend_cannot_honour_is_refused_unless_off() -> None:
    assert refused(SCRIPTED, Endpoint.CHAT, logprobs=True) == "logprobs"
    assert refused(SCRIPTED, Endpoint.CHAT, top_logprobs=1) == "top_logprobs"
    assert refused(SCRIPTED, Endpoint.COMPLETIONS, logprobs=0) == "logprobs"
    assert refused(SCRIPTED, Endpoint.COMPLETIONS, echo=True) == "echo"
    assert refused(SCRIPTED, Endpoint.CHAT, logprobs=False, top_logprobs=0) is None
    assert refused(SCRIPTED, Endpoint.CHAT, logprobs=None, modalities=["text"]) is None


def test_an_operation_not_listed_is_left_to_the_backend() -> None:
    assert refused(LOCAL, Endpoint.RESPONSES, foo_bar=1) is None
