"""The status page's request log in a real headless browser: it lists the captured requests
and opens one (prompt, reply, tokens, latency, trace id) with the admin key the page keeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.browser import chromium
from tests.support.poll import until
from tests.support.server import RunningServer

ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    folder: Path = tmp_path_factory.mktemp("requests")
    return start_server(
        cluster_config(
            scripted("chat-model", ["The capital", " of France", " is Paris."]),
            auth={"api_keys": [{"name": "team-a", "key": "k-team-a"}]},
            server={"admin_key": ADMIN},
            capture={"enabled": True, "path": str(folder)},
        )
    )


def _read(driver: Any, selector: str) -> str:
    # One script: the list re-renders every two seconds, so an element found first and
    # read after may already be gone.
    found = driver.execute_script(
        "const el = document.querySelector(arguments[0]);"
        "return el && el.offsetParent !== null ? el.innerText : '';",
        selector,
    )
    return str(found or "")


def test_the_page_lists_requests_and_opens_one(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k-team-a", max_retries=0)
    client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_headers={"x-request-id": "viewer-plain"},
    )
    stream = client.chat.completions.create(
        model="chat-model",
        messages=[{"role": "user", "content": "And streamed?"}],
        stream=True,
        extra_headers={"x-request-id": "viewer-stream"},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    until(
        lambda: httpx.get(f"{server.base_url}/admin/requests/viewer-stream", headers=admin),
        accept=lambda r: r.status_code == 200,
        what="the stream in the log",
    )
    with chromium() as driver:
        # The page keeps the admin key in the browser; set it before the page asks.
        driver.get(f"{server.base_url}/healthz")  # type: ignore[attr-defined]
        driver.execute_script(  # type: ignore[attr-defined]
            "localStorage.setItem('applianceAdminKey', arguments[0])", ADMIN
        )
        driver.get(f"{server.base_url}/")  # type: ignore[attr-defined]
        row = 'tr[data-request="viewer-plain"]'
        listed = until(lambda: _read(driver, row), what="the plain request listed")
        assert "chat-model" in listed and "200" in listed and "ms" in listed
        assert "team-a" in listed
        assert _read(driver, 'tr[data-request="viewer-stream"]')
        heading = _read(driver, "#requests h2")
        assert "Requests" in heading

        driver.execute_script(  # type: ignore[attr-defined]
            "document.querySelector(arguments[0]).click()", 'tr[data-request="viewer-stream"]'
        )
        opened = until(
            lambda: _read(driver, "#request"),
            accept=lambda t: "viewer-stream" in t and "prompt" in t,
            what="the stream opened",
        )
        assert "And streamed?" in opened  # the prompt
        assert "The capital of France is Paris." in opened  # the reply, assembled
        assert "out tokens" in opened and "ms" in opened and "streamed" in opened
        assert "trace id: –" in opened  # tracing is off on this server

        driver.execute_script(  # type: ignore[attr-defined]
            "document.querySelector(arguments[0]).click()", 'tr[data-request="viewer-plain"]'
        )
        until(
            lambda: _read(driver, "#request"),
            accept=lambda t: "viewer-plain" in t and "What is the capital of France?" in t,
            what="the plain request opened",
        )
        driver.execute_script(  # type: ignore[attr-defined]
            "document.querySelector('#request button').click()"
        )
        until(lambda: _read(driver, "#request") == "", what="the request closed")
