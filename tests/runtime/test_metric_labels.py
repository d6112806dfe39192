"""Metric labels are bounded: a route's template, never the path a caller wrote."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import cluster_config, scripted


async def test_route_label_is_the_template_even_when_the_key_is_refused(
    app_client: Callable[..., Any],
) -> None:
    config = cluster_config(
        scripted("m", ["x"]), auth={"api_keys": [{"name": "k", "key": "secret-k"}]}
    )
    async with app_client(config) as client:
        paths = [f"/v1/models/{'z' * 300}-{i}" for i in range(5)]
        for path in paths:
            assert (await client.get(path)).status_code == 401
        assert (await client.delete("/v1/models/abc")).status_code in (401, 405)
        assert (await client.get("/nowhere/at/all")).status_code == 404
        text = (await client.get("/metrics")).text
    assert 'route="/v1/models/{model_id:path}"' in text
    assert 'route="unmatched"' in text
    assert "zzzz" not in text and "nowhere" not in text
