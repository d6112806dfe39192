"""Property: whatever a client sends, no 5xx, always a valid envelope, the app keeps serving.

Three sources of requests: valid bodies with one field mutated, arbitrary JSON or bytes,
and bodies generated from OpenAI's own API description of the routes we share
(``openai_requests.json``, read by schemathesis), both valid ones (sent to our models)
and ones that break OpenAI's schema. ``APPLIANCE_FUZZ_EXAMPLES`` raises the number of
OpenAPI examples per route and mode for a longer, scheduled run.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.config import ApplianceConfig
from appliance.http.app import create_app
from appliance.serving.cluster import Cluster
from tests.conftest import cluster_config, scripted
from tests.support.schemas import errors as schema_errors

CONFIG = cluster_config(
    scripted("chat", ["a", "b"], max_concurrency=64),
    scripted("vec", type="embedding", options={"dimensions": 4}),
    scripted("rank", type="rerank"),
    server={"max_body_bytes": 65536},
)
VALID = {
    "/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "chat", "prompt": "hi"},
    "/v1/embeddings": {"model": "vec", "input": ["a", "b"]},
    "/v1/rerank": {"model": "rank", "query": "q", "documents": ["a", "b"]},
    "/api/v1/beta/relevance": {"model": "rank", "query": "q", "documents": ["a"]},
    "/v1/responses": {"model": "chat", "input": "hi"},
}

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid body with one field replaced, removed or added."""
    path = draw(st.sampled_from(sorted(VALID)))
    body: dict[str, Any] = copy.deepcopy(VALID[path])
    action = draw(st.sampled_from(["replace", "remove", "add", "stream"]))
    key = draw(
        st.sampled_from(
            [
                *body,
                "n",
                "max_tokens",
                "temperature",
                "stop",
                "top_n",
                "encoding_format",
                "dimensions",
                "stream_options",
                "top_p",
                "seed",
                "input",
                "instructions",
                "max_output_tokens",
                "text",
                "tools",
                "tool_choice",
            ]
        )
    )
    if action == "replace" or action == "add":
        body[key] = draw(json_values)
    elif action == "remove":
        body.pop(key, None)
    else:
        body["stream"] = True
        body[key] = draw(json_values)
    return path, orjson.dumps(body)


@st.composite
def anything(draw: st.DrawFn) -> tuple[str, bytes]:
    """Any JSON, or any bytes, to any endpoint."""
    path = draw(st.sampled_from(sorted(VALID)))
    if draw(st.booleans()):
        return path, orjson.dumps(draw(json_values))
    return path, draw(st.binary(max_size=200))


@pytest.fixture(scope="module")
def runner() -> Iterator[tuple[asyncio.Runner, httpx.AsyncClient]]:
    with asyncio.Runner() as run:
        config = ApplianceConfig.model_validate(copy.deepcopy(CONFIG))
        cluster = Cluster.from_config(config)
        run.run(cluster.start())
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(config, cluster=cluster)),
            base_url="http://fuzz",
        )
        yield run, client
        run.run(client.aclose())
        run.run(cluster.close())


REPLIES = {
    "/v1/chat/completions": "CreateChatCompletionResponse",
    "/v1/completions": "CreateCompletionResponse",
    "/v1/embeddings": "CreateEmbeddingResponse",
    "/v1/responses": "Response",
}


def check(runner: tuple[asyncio.Runner, httpx.AsyncClient], path: str, content: bytes) -> None:
    run, client = runner
    response = run.run(
        client.post(path, content=content, headers={"content-type": "application/json"})
    )
    assert response.status_code < 500, (path, content, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert schema_errors("ErrorResponse", body) == [], body
    elif response.headers["content-type"].startswith("text/event-stream"):
        if path == "/v1/responses":  # typed events, the last one the response's end
            events = [
                orjson.loads(line[6:])
                for line in response.text.splitlines()
                if line.startswith("data: ")
            ]
            assert all(schema_errors("ResponseStreamEvent", e) == [] for e in events), events
            assert events[-1]["type"] in (
                "response.completed",
                "response.incomplete",
                "response.failed",
            )
        else:
            assert response.text.endswith("data: [DONE]\n\n")
    else:
        reply = response.json()
        # OpenAI's schema has no base64 embeddings (strings), though its API sends them.
        if path in REPLIES and not any(
            isinstance(item.get("embedding"), str) for item in reply.get("data", ())
        ):
            assert schema_errors(REPLIES[path], reply) == [], (content, reply)
    alive = run.run(client.post("/v1/chat/completions", json=VALID["/v1/chat/completions"]))
    assert alive.status_code == 200


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_valid_requests_never_5xx(
    runner: tuple[asyncio.Runner, httpx.AsyncClient], case: tuple[str, bytes]
) -> None:
    check(runner, *case)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=anything())
def test_arbitrary_bodies_never_5xx(
    runner: tuple[asyncio.Runner, httpx.AsyncClient], case: tuple[str, bytes]
) -> None:
    check(runner, *case)


OPENAI = schemathesis.openapi.from_path(Path(__file__).with_name("openai_requests.json"))
OPENAPI_EXAMPLES = int(os.environ.get("APPLIANCE_FUZZ_EXAMPLES", "100"))
OUR_MODELS = {
    "/chat/completions": "chat",
    "/completions": "chat",
    "/embeddings": "vec",
    "/responses": "chat",
}
# OpenAI's Responses request schema is large and most of it is refused here: fewer examples.
EXAMPLES = {"/responses": max(10, OPENAPI_EXAMPLES // 4)}


@st.composite
def from_openai(draw: st.DrawFn, route: str, mode: schemathesis.GenerationMode) -> bytes:
    """A request body as OpenAI's API description has it (or, negative, breaks it).

    Valid bodies name one of our models (else they would all be 404s); the strings
    schemathesis draws may hold lone surrogates, which only an ASCII encoder can write.
    A negative case may be raw bytes, sent as they are.
    """
    case = draw(OPENAI[route]["POST"].as_strategy(generation_mode=mode))
    body = case.body
    if isinstance(body, bytes):
        return body
    if mode is schemathesis.GenerationMode.POSITIVE and isinstance(body, dict):
        body["model"] = OUR_MODELS[route]
    return json.dumps(body, default=repr).encode()


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("route", sorted(OUR_MODELS))
def test_requests_from_openais_api_description_never_5xx(
    runner: tuple[asyncio.Runner, httpx.AsyncClient],
    route: str,
    mode: schemathesis.GenerationMode,
) -> None:
    @settings(
        max_examples=EXAMPLES.get(route, OPENAPI_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(content=from_openai(route, mode))
    def run(content: bytes) -> None:
        check(runner, f"/v1{route}", content)

    run()
