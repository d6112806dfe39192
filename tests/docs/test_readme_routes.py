"""The README's route table names every route the app serves, and nothing else."""

from __future__ import annotations

import re
from typing import Any

import falcon.inspect
import pytest

from appliance.config import ApplianceConfig
from appliance.http.app import API_PREFIXES, create_app
from tests.docs import readme

CONFIG = {"models": [{"name": "m", "backend": "scripted"}]}
_ROUTE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE) (/\S*)$")


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


@pytest.mark.parametrize("prefix", API_PREFIXES)
@pytest.mark.parametrize(("method", "path"), API_ROUTES, ids=lambda v: str(v))
async def test_api_route_answers_under_prefix(
    app_client: Any, prefix: str, method: str, path: str
) -> None:
    async with app_client(CONFIG) as client:
        response = await client.request(
            method, prefix + path.replace("{}", "m"), json={} if method == "POST" else None
        )
    assert response.status_code not in (404, 405), response.text
