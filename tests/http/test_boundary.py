"""What comes in from clients is bounded once, at the boundary, for every route.

Nesting depth, the sizes a caller chooses, the validated values that travel on, and how
much of a caller's text is echoed or logged. In-process; the real server's connection
limits are in ``test_boundary_e2e``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from appliance.clip import ECHO_CHARS
from appliance.http.body import MAX_DEPTH, too_deep
from appliance.wire.openai.protocol import MAX_DOCUMENTS, MAX_INPUTS
from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.schemas import assert_valid

CONFIG = cluster_config(
    scripted("chat", ["a", "b"]),
    scripted("vec", type="embedding", options={"dimensions": 8}),
    scripted("rank", type="rerank"),
    server={"max_body_bytes": 1_048_576},
)
VALID = {
    "/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "chat", "prompt": "hi"},
    "/v1/embeddings": {"model": "vec", "input": ["a", "b"]},
    "/v1/rerank": {"model": "rank", "query": "q", "documents": ["a", "b"]},
    "/api/v1/beta/relevance": {"model": "rank", "query": "q", "documents": ["a"]},
    "/api/v1/chat/completions": {"model": "chat", "messages": [{"role": "user", "content": "x"}]},
}


def nested(depth: int) -> Any:
    """Arrays and objects, alternating, ``depth`` levels deep."""
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def with_nested(body: dict[str, Any], depth: int) -> bytes:
    """``body`` with a field ``extra`` nested ``depth`` levels deep (orjson writes 254 at most)."""
    levels = range(depth - 1, -1, -1)
    opening = "".join("[" if level % 2 else '{"k":' for level in levels)
    closing = "".join("]" if level % 2 else "}" for level in reversed(levels))
    return orjson.dumps(body)[:-1] + f',"extra":{opening}1{closing}}}'.encode()


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


async def expect_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert_valid("ErrorResponse", body)
    assert body["error"]["code"] == code, body
    return dict(body["error"])


# ---- nesting ------------------------------------------------------------------------

json_trees = st.recursive(
    st.none() | st.integers(-1000, 1000) | st.text(alphabet='[]{}"\\ab,:', max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(tree=json_trees, limit=st.integers(min_value=0, max_value=12))
def test_depth_check_agrees_with_walking_the_parsed_json(tree: Any, limit: int) -> None:
    raw = orjson.dumps({"x": tree})
    assert too_deep(raw, limit) == (depth_of({"x": tree}) > limit)


def test_depth_check_sees_through_brackets_and_escaped_quotes_in_strings() -> None:
    tricky = '"]]]}}}[[[{{{\\"' * 50
    assert not too_deep(orjson.dumps({"a": [tricky, {"b": tricky}]}), 3)
    assert too_deep(orjson.dumps({"a": [tricky, {"b": [tricky]}]}), 3)


@pytest.mark.parametrize("path", sorted(VALID))
@pytest.mark.parametrize("depth", [MAX_DEPTH, 300, 1000])
async def test_nesting_over_the_limit_is_400_on_every_route(
    app_client: Any, path: str, depth: int
) -> None:
    async with app_client(CONFIG) as client:
        # The body object adds one level.
        response = await client.post(path, content=with_nested(VALID[path], depth))
        error = await expect_error(response, 400, "invalid_json")
        assert f"at most {MAX_DEPTH} levels" in error["message"]
        still = await client.post(path, json=VALID[path])
        assert still.status_code == 200, still.text


async def test_nesting_beyond_the_parser_says_the_limit(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        response = await client.post(
            "/v1/chat/completions",
            content=b'{"model": "chat", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}",
            headers={"content-type": "application/json"},
        )
        error = await expect_error(response, 400, "invalid_json")
        assert f"nested at most {MAX_DEPTH} levels" in error["message"]
        assert "1024" not in error["message"]


def upstream_config(upstream: FakeUpstream, **server: Any) -> dict[str, Any]:
    def proxied(name: str, kind: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": kind,
            "backend": "openai",
            "options": {"base_url": upstream.base_url, "model": "ok"},
        }

    return cluster_config(
        proxied("up", "llm"),
        proxied("up-vec", "embedding"),
        proxied("up-rank", "rerank"),
        **({"server": server} if server else {}),
    )


UPSTREAM_VALID = {
    "/v1/chat/completions": {"model": "up", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "up", "prompt": "hi"},
    "/v1/embeddings": {"model": "up-vec", "input": ["a"]},
    "/v1/rerank": {"model": "up-rank", "query": "q", "documents": ["a"]},
}


@pytest.mark.parametrize("path", sorted(UPSTREAM_VALID))
async def test_an_openai_upstream_gets_bodies_at_the_limit_and_never_deeper(
    app_client: Any, fake_upstream: FakeUpstream, path: str
) -> None:
    async with app_client(upstream_config(fake_upstream)) as client:
        deepest = {**UPSTREAM_VALID[path], "tools_like": nested(MAX_DEPTH - 1)}
        response = await client.post(path, content=orjson.dumps(deepest))
        assert response.status_code == 200, response.text
        assert fake_upstream.requests[-1].body["tools_like"] == deepest["tools_like"]
        for depth in (MAX_DEPTH, 254, 600, 1023):
            seen = len(fake_upstream.requests)
            response = await client.post(path, content=with_nested(UPSTREAM_VALID[path], depth))
            await expect_error(response, 400, "invalid_json")
            assert len(fake_upstream.requests) == seen, "refused before reaching the upstream"


# ---- validated values travel on; every size a caller chooses is bounded ------------


async def test_requests_travel_on_as_sent_and_no_field_is_added(
    app_client: Any, fake_upstream: FakeUpstream
) -> None:
    async with app_client(upstream_config(fake_upstream)) as client:
        response = await client.post(
            "/v1/embeddings", json={"model": "up-vec", "input": "a", "dimensions": 2}
        )
        assert response.status_code == 200, response.text
        assert fake_upstream.requests[-1].body["dimensions"] == 2
        response = await client.post(
            "/v1/chat/completions",
            json={
                "model": "up",
                "messages": [{"role": "user", "content": "hi", "name": "x"}],
                "max_tokens": 5,
                "temperature": 1,
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
        )
        assert response.status_code == 200, response.text
        sent = fake_upstream.requests[-1].body
        assert sent["max_tokens"] == 5
        assert sent["messages"] == [{"role": "user", "content": "hi", "name": "x"}]
        assert sent["tools"] == [{"type": "function", "function": {"name": "f"}}]
        assert "n" not in sent and "stream" not in sent, "fields not sent are not added"


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_tokens", True), ("max_tokens", "100"), ("max_tokens", 5.0), ("n", True)],
)
async def test_a_value_of_the_wrong_type_is_a_400_not_coerced(
    app_client: Any, field: str, value: Any
) -> None:
    """As OpenAI: ``true`` is not 1, ``"100"`` is not 100 and 5.0 is not an integer."""
    async with app_client(CONFIG) as client:
        body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], field: value}
        response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field
    assert error["code"] == "invalid_type"


async def test_a_huge_float_dimensions_is_a_400_not_a_500(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        response = await client.post(
            "/v1/embeddings", json={"model": "vec", "input": "a", "dimensions": 16826166.0}
        )
        error = await expect_error(response, 400, "invalid_type")  # not an integer
        assert error["param"] == "dimensions"


@pytest.mark.parametrize(
    ("path", "change", "param", "code"),
    [
        ("/v1/embeddings", {"input": ["a"] * (MAX_INPUTS + 1)}, "input", "array_above_max_length"),
        ("/v1/embeddings", {"input": [1] * (MAX_INPUTS + 1)}, "input", "array_above_max_length"),
        ("/v1/embeddings", {"input": [[1]] * (MAX_INPUTS + 1)}, "input", "array_above_max_length"),
        ("/v1/embeddings", {"input": [2**40]}, "input", "invalid_value"),
        ("/v1/embeddings", {"dimensions": 10**9}, "dimensions", "invalid_value"),
        (
            "/v1/completions",
            {"prompt": ["a"] * (MAX_INPUTS + 1)},
            "prompt",
            "array_above_max_length",
        ),
        ("/v1/completions", {"prompt": [-1]}, "prompt", "invalid_value"),
        ("/v1/completions", {"n": 10**6}, "n", "invalid_value"),
        ("/v1/chat/completions", {"seed": 2**63}, "seed", "invalid_value"),
        ("/v1/chat/completions", {"top_logprobs": 21}, "top_logprobs", "invalid_value"),
        ("/v1/chat/completions", {"max_tokens": 10**9}, "max_tokens", "invalid_value"),
        (
            "/v1/rerank",
            {"documents": ["d"] * (MAX_DOCUMENTS + 1)},
            "documents",
            "array_above_max_length",
        ),
        ("/v1/rerank", {"top_n": MAX_DOCUMENTS + 1}, "top_n", "invalid_value"),
        (
            "/api/v1/beta/relevance",
            {"documents": ["d"] * (MAX_DOCUMENTS + 1)},
            "documents",
            "array_above_max_length",
        ),
    ],
)
async def test_every_size_a_caller_chooses_is_bounded(
    app_client: Any, path: str, change: dict[str, Any], param: str, code: str
) -> None:
    async with app_client(CONFIG) as client:
        response = await client.post(path, json={**VALID[path], **change})
        error = await expect_error(response, 400, code)
        assert error["param"] == param


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("/v1/embeddings", {"input": ["a"] * MAX_INPUTS}),
        ("/v1/rerank", {"documents": ["d"] * MAX_DOCUMENTS, "top_n": MAX_DOCUMENTS}),
        ("/v1/completions", {"prompt": [[1, 2]] * 4}),
    ],
)
async def test_sizes_at_the_bounds_are_served(
    app_client: Any, path: str, change: dict[str, Any]
) -> None:
    async with app_client(CONFIG) as client:
        response = await client.post(path, json={**VALID[path], **change})
        assert response.status_code == 200, response.text


# ---- callers' text is clipped where it is echoed or logged --------------------------

LONG = "m" * 100_000


async def test_a_long_model_name_is_echoed_clipped_with_its_length(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        for path in ("/v1/chat/completions", "/v1/embeddings"):
            response = await client.post(path, json={**VALID[path], "model": LONG})
            error = await expect_error(response, 404, "model_not_found")
            assert len(error["message"]) < 2 * ECHO_CHARS + 200
            assert "100000 characters" in error["message"]
            assert "Available models: chat, vec, rank" in error["message"]
        response = await client.get(f"/v1/models/{LONG[:6000]}")
        error = await expect_error(response, 404, "model_not_found")
        assert "6000 characters" in error["message"]


async def test_a_long_unknown_path_is_echoed_clipped(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        response = await client.post("/v1/" + "p" * 6000, json={})
        error = await expect_error(response, 404, "not_found")
        assert len(error["message"]) < ECHO_CHARS + 100
        assert "6004 characters" in error["message"]


async def test_the_access_log_clips_what_the_caller_wrote(
    app_client: Callable[..., Any],
) -> None:
    async with app_client(CONFIG) as client:
        with capture_logs() as logs:
            await client.post(
                "/v1/chat/completions", json={**VALID["/v1/chat/completions"], "model": LONG}
            )
            await client.post("/v1/" + "p" * 6000, json={})
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert len(lines) == 2
    assert lines[0]["model"].endswith("(100000 characters)")
    assert len(lines[0]["model"]) < ECHO_CHARS + 40
    assert lines[1]["path"].endswith("(6004 characters)")
    assert all(len(str(value)) < ECHO_CHARS + 40 for line in lines for value in line.values())
