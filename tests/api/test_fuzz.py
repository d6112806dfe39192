"""Property: whatever a client sends, no 5xx, always a valid envelope, the app keeps serving."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.app import create_app
from appliance.cluster import Cluster
from appliance.config import ApplianceConfig
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
        assert response.text.endswith("data: [DONE]\n\n")
    else:
        response.json()
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
