"""Nothing that names a key or its spend reaches a caller without the admin key (real server).

With client keys and no ``server.admin_key``: ``/admin/*`` is 403 ``admin_disabled``,
``/metrics`` has no series labelled with a key, ``/status.json`` shows no budgets, and
``/readyz`` says what a load balancer needs and nothing more. With an admin key, those
routes are 401 without it and show the details with it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer

ADMIN = "operator-admin-key"
KEYS = [
    {"name": "tenant-a", "key": "k-tenant-a", "budget": {"amount": 100}},
    {"name": "tenant-b", "key": "k-tenant-b"},
]
PRICED = {"pricing": {"input_per_mtok": 1e6, "output_per_mtok": 1e6}}


def config(usage: Path, **server: Any) -> dict[str, Any]:
    return cluster_config(
        scripted("echo", ["hello there"], **PRICED),
        auth={"api_keys": KEYS},
        state={"usage_path": str(usage)},
        server=server,
    )


@pytest.fixture(scope="module")
def keyless(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    """Client keys, no admin key; each tenant has spent something."""
    server = start_server(config(tmp_path_factory.mktemp("keyless") / "usage.sqlite"))
    spend(server)
    return server


@pytest.fixture(scope="module")
def guarded(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    usage = tmp_path_factory.mktemp("guarded") / "usage.sqlite"
    server = start_server(config(usage, admin_key=ADMIN))
    spend(server)
    return server


def spend(server: RunningServer) -> None:
    for key in ("k-tenant-a", "k-tenant-b"):
        response = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text


def get(server: RunningServer, path: str, key: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.base_url}{path}", headers=headers, timeout=10)


def key_labels(text: str) -> set[str]:
    return {
        sample.labels["key"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "key" in sample.labels
    }


# Without an admin key.


@pytest.mark.parametrize("key", [None, "k-tenant-a"])
def test_admin_routes_are_refused_without_an_admin_key(
    keyless: RunningServer, key: str | None
) -> None:
    usage = get(keyless, "/admin/usage", key)
    assert usage.status_code == 403, usage.text
    assert usage.json()["error"]["code"] == "admin_disabled"
    assert "tenant" not in usage.text
    load = httpx.post(
        f"{keyless.base_url}/admin/load",
        json={"model": "echo"},
        headers={"Authorization": f"Bearer {key}"} if key else {},
        timeout=10,
    )
    assert load.status_code == 403 and load.json()["error"]["code"] == "admin_disabled"


@pytest.mark.parametrize("key", [None, "k-tenant-a"])
def test_metrics_without_an_admin_key_name_no_key(keyless: RunningServer, key: str | None) -> None:
    response = get(keyless, "/metrics", key)
    assert response.status_code == 200
    assert key_labels(response.text) == set()
    assert 'key="' not in response.text and "tenant-" not in response.text
    # The rest is there: the requests were counted.
    assert "appliance_requests_total" in response.text


@pytest.mark.parametrize("key", [None, "k-tenant-a"])
def test_status_without_an_admin_key_shows_no_budgets(
    keyless: RunningServer, key: str | None
) -> None:
    response = get(keyless, "/status.json", key)
    assert response.status_code == 200
    body = response.json()
    assert body["budgets"] == []
    assert "tenant-" not in response.text
    assert [m["name"] for m in body["models"]] == ["echo"]


def keys_anywhere(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_anywhere(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_anywhere(v)}
    return set()


def test_status_without_an_admin_key_shows_no_pids_memory_errors_or_paths(
    keyless: RunningServer,
) -> None:
    body = get(keyless, "/status.json", "k-tenant-a").json()
    assert not keys_anywhere(body) & {"pid", "memory_mb", "last_error", "file"}
    assert body["models"][0]["workers"][0]["state"]  # the rest of the view is there
    assert str(keyless.config_path) not in get(keyless, "/status.json").text


def test_readyz_tells_anyone_only_what_a_load_balancer_needs(keyless: RunningServer) -> None:
    response = get(keyless, "/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "unavailable": []}


# With an admin key.


@pytest.mark.parametrize("path", ["/admin/usage", "/metrics", "/status.json"])
@pytest.mark.parametrize("key", [None, "k-tenant-a", "wrong"])
def test_operator_routes_need_the_admin_key_once_there_is_one(
    guarded: RunningServer, path: str, key: str | None
) -> None:
    response = get(guarded, path, key)
    assert response.status_code == 401, response.text
    assert "tenant-" not in response.text


def test_the_admin_key_sees_the_details(guarded: RunningServer) -> None:
    assert key_labels(guarded.metrics_text(ADMIN)) == {"tenant-a", "tenant-b"}
    status = guarded.status(ADMIN)
    assert {"pid", "file"} <= keys_anywhere(status)
    budgets = status["budgets"]
    assert [b["key"] for b in budgets] == ["tenant-a"]
    assert budgets[0]["amount"] == 100
    rows = until(
        lambda: get(guarded, "/admin/usage", ADMIN).json()["data"],
        accept=lambda data: len(data) == 2,
        what="both tenants' usage",
    )
    assert {row["key"] for row in rows} == {"tenant-a", "tenant-b"}
    ready = get(guarded, "/readyz", ADMIN)
    assert ready.status_code == 200
    assert set(ready.json()) == {"status", "unavailable", "models"}
    assert "echo" in ready.json()["models"]


def test_readyz_without_the_admin_key_has_no_details(guarded: RunningServer) -> None:
    for key in (None, "k-tenant-a"):
        ready = get(guarded, "/readyz", key)
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "unavailable": []}
