"""The README's route table names every route the app serves, and nothing else."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import falcon.inspect
import pytest

from appliance.config import ApplianceConfig
from appliance.http.app import API_PREFIXES, create_app
from tests.docs import readme

CONFIG = {"models": [{"name": "m", "backend": "scripted"}]}
_ROUTE = re.compile(r"^(GET|HEAD|POST|PUT|PATCH|DELETE) (/\S*)$")


def _shape(path: str) -> str:
    """``/models/{model_id:path}`` -> ``/models/{}``: parameters are named freely."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _split(path: str) -> tuple[str, str]:
    """``/v1/models`` -> ``("/v1", "/models")``; a path outside the API: ``("", path)``."""
    for prefix in API_PREFIXES:
        if path.startswith(prefix + "/"):
            return prefix, path[len(prefix) :]
    return "", path


def served() -> dict[tuple[str, str], set[str]]:
    """(method, path as the README writes it) -> the prefixes it is served under."""
    app = create_app(ApplianceConfig.model_validate(CONFIG)).app
    out: dict[tuple[str, str], set[str]] = {}
    for route in falcon.inspect.inspect_routes(app):  # type: ignore[arg-type]
        prefix, path = _split(route.path)
        for method in route.methods:
            if not method.internal:
                out.setdefault((method.method, _shape(path)), set()).add(prefix)
    return out


def documented() -> set[tuple[str, str]]:
    rows = readme.table_rows(readme.section("Routes"))
    found = set()
    for row in rows:
        for span in readme.code_spans(row[0]):
            match = _ROUTE.match(span)
            if match:
                found.add((match.group(1), _shape(match.group(2))))
    return found


def test_every_route_the_app_serves_is_in_the_readme_route_table() -> None:
    missing = sorted(f"{m} {p}" for m, p in served().keys() - documented())
    assert not missing, f"routes served but not in the README's Routes table: {missing}"


def test_every_route_in_the_readme_table_is_served() -> None:
    phantom = sorted(f"{m} {p}" for m, p in documented() - served().keys())
    assert not phantom, f"the README's Routes table names routes the app lacks: {phantom}"


def test_api_routes_are_registered_once_under_v1() -> None:
    # /api/v1 is served from the same routes (see the next test), not a second copy of them.
    api = {prefix for prefixes in served().values() for prefix in prefixes} - {""}
    assert api == {"/v1"}


API_ROUTES = sorted(route for route, prefixes in served().items() if prefixes != {""})

# The app of the answering tests: a model of each type, so every route has one to serve.
ANSWERING = {
    "models": [
        {"name": "m", "backend": "scripted", "options": {"reply": ["Hello", " there."]}},
        {"name": "e", "type": "embedding", "backend": "scripted"},
        {"name": "r", "type": "rerank", "backend": "scripted"},
    ]
}
ASK = [{"role": "user", "content": "hi"}]
# A valid request for each API route (``{}`` in a path is the model ``m``), and what in its
# 200 reply shows that the route's own handler answered.
VALID: dict[tuple[str, str], tuple[dict[str, Any] | None, Callable[[Any], bool]]] = {
    ("GET", "/models"): (None, lambda r: [m["id"] for m in r["data"]] == ["m", "e", "r"]),
    ("GET", "/models/{}"): (None, lambda r: r["id"] == "m" and r["object"] == "model"),
    ("POST", "/chat/completions"): (
        {"model": "m", "messages": ASK},
        lambda r: r["choices"][0]["message"]["content"] == "Hello there.",
    ),
    ("POST", "/completions"): (
        {"model": "m", "prompt": "hi"},
        lambda r: r["choices"][0]["text"] == "Hello there.",
    ),
    ("POST", "/embeddings"): (
        {"model": "e", "input": ["a", "b"]},
        lambda r: [d["index"] for d in r["data"]] == [0, 1],
    ),
    ("POST", "/rerank"): (
        {"model": "r", "query": "cat", "documents": ["dog", "cat"]},
        lambda r: r["results"][0]["index"] == 1,
    ),
    ("POST", "/beta/relevance"): (
        {"model": "r", "query": "cat", "documents": ["dog", "cat"]},
        lambda r: len(r["data"]) == 2,
    ),
    ("POST", "/responses"): (
        {"model": "m", "input": "hi"},
        lambda r: r["object"] == "response" and r["status"] == "completed",
    ),
    ("POST", "/messages"): (
        {"model": "m", "max_tokens": 16, "messages": ASK},
        lambda r: r["type"] == "message" and r["content"][0]["text"] == "Hello there.",
    ),
    ("POST", "/messages/count_tokens"): (
        {"model": "m", "messages": ASK},
        lambda r: r["input_tokens"] > 0,
    ),
}


def test_every_api_route_has_a_valid_request_here() -> None:
    assert sorted(VALID) == API_ROUTES, "add a valid request for each new route to VALID"


@pytest.mark.parametrize("prefix", API_PREFIXES)
@pytest.mark.parametrize(("method", "path"), API_ROUTES, ids=lambda v: str(v))
async def test_api_route_answers_under_prefix(
    app_client: Any, prefix: str, method: str, path: str
) -> None:
    """A valid request is a 200 from the route's own handler; one without a model is the
    route's own 400 naming ``model`` (not a 404, 405 or 500)."""
    body, holds = VALID[(method, path)]
    url = prefix + path.replace("{}", "m")
    async with app_client(ANSWERING) as client:
        response = await client.request(method, url, json=body)
        assert response.status_code == 200, response.text
        assert holds(response.json()), response.text
        if method == "POST":
            refused = await client.request(method, url, json={})
            assert refused.status_code == 400, refused.text
            if path.startswith("/messages"):  # Anthropic's envelope
                assert refused.json()["error"] == {
                    "type": "invalid_request_error",
                    "message": "model: Field required",
                }
            else:
                error = refused.json()["error"]
                assert (error["param"], error["code"]) == ("model", "missing_required_parameter")
