"""Readiness on the real server: a replica is ready while its required models can serve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer, free_port

MESSAGES = [{"role": "user", "content": "hi"}]


def refused(name: str, **fields: Any) -> dict[str, Any]:
    """An ``openai`` model whose upstream refuses connections (nothing listens)."""
    closed = f"http://127.0.0.1:{free_port()}/v1"
    return {"name": name, "backend": "openai", "options": {"base_url": closed}, **fields}


def readyz(server: RunningServer) -> httpx.Response:
    return httpx.get(f"{server.base_url}/readyz", timeout=5)


def test_readyz_stays_200_while_an_optional_upstream_is_down(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(
        cluster_config(
            refused("outage", health={"interval_s": 0.2, "timeout_s": 0.2}),
            scripted("fine", ["ok"]),
        )
    )
    until(
        lambda: readyz(server).json()["models"]["outage"]["available"] is False,
        what="the outage model unavailable",
    )

    response = readyz(server)
    body = response.json()
    assert response.status_code == 200 and body["status"] == "ready"
    assert body["unavailable"] == ["outage"]
    assert body["models"]["outage"]["required"] is False
    assert body["models"]["outage"]["workers"][0]["state"] == "ejected"
    assert body["models"]["fine"]["available"] is True
    chat = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={"model": "fine", "messages": MESSAGES}
    )
    assert chat.status_code == 200


def test_readyz_is_503_while_a_required_model_is_down(
    start_server: Callable[..., RunningServer],
) -> None:
    # Probes off and one failure ejects: up until the first request finds it refusing.
    server = start_server(
        cluster_config(
            refused(
                "needed",
                required=True,
                retries=0,
                health={"interval_s": 0, "failures": 1, "cooldown_s": 60},
            ),
            scripted("fine", ["ok"]),
        )
    )
    assert readyz(server).status_code == 200
    failed = httpx.post(
        f"{server.base_url}/v1/chat/completions", json={"model": "needed", "messages": MESSAGES}
    )
    assert failed.status_code in (502, 503)

    response = readyz(server)
    body = response.json()
    assert response.status_code == 503 and body["status"] == "not_ready"
    assert body["unavailable"] == ["needed"]
    assert body["models"]["needed"]["required"] is True
    assert body["models"]["fine"]["available"] is True
