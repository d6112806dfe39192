"""The status page in a real headless browser: it renders, and follows health live."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import cluster_config, scripted
from tests.support.browser import chromium
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer


@pytest.fixture
def upstreams() -> Iterator[list[FakeUpstream]]:
    fakes = [FakeUpstream().start(), FakeUpstream().start()]
    yield fakes
    for fake in fakes:
        fake.stop()


def test_page_renders_models_and_shows_a_worker_going_unhealthy(
    upstreams: list[FakeUpstream], start_server: Callable[..., RunningServer]
) -> None:
    from selenium.webdriver.common.by import By

    server = start_server(
        cluster_config(
            {
                "name": "upstream-pair",
                "backend": "openai",
                "health": {"interval_s": 0.3, "timeout_s": 0.3},
                "options": {"base_url": [u.base_url for u in upstreams], "model": "ok"},
            },
            scripted("scripted-chat", ["hi"]),
            routes=[{"alias": "chat", "targets": ["upstream-pair", "scripted-chat"]}],
        )
    )
    with chromium() as driver:
        driver.get(f"{server.base_url}/")  # type: ignore[attr-defined]

        def row_state(worker: str) -> str:
            # Read in one script: the page re-renders every second, so an element found
            # first and read after may already be gone.
            text = driver.execute_script(  # type: ignore[attr-defined]
                "const cell = document.querySelector(arguments[0]);"
                "return cell ? cell.textContent.trim() : '';",
                f'tr[data-worker="{worker}"] td:nth-child(2)',
            )
            return str(text or "")

        until(lambda: row_state("upstream-pair/0") == "healthy", what="the row healthy")
        body = driver.find_element(By.TAG_NAME, "body").text  # type: ignore[attr-defined]
        assert "upstream-pair" in body and "scripted-chat" in body
        assert "chat" in body and "ready" in body
        driver.execute_script("window.__sameDocument = 42")  # type: ignore[attr-defined]

        upstreams[0].stop()
        until(lambda: row_state("upstream-pair/0") == "ejected", what="the row ejected")
        assert row_state("upstream-pair/1") == "healthy"
        same = driver.execute_script("return window.__sameDocument")  # type: ignore[attr-defined]
        assert same == 42, "the page changed without being reloaded"
