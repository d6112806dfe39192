"""OpenAI's ``x-ratelimit-*`` headers, through the real server, with either limiter.

As OpenAI documents them: ``limit-*`` the most a window admits, ``remaining-*`` what is
left, ``reset-*`` the time until the limit is back to its initial state. Requests and
tokens are counted apart, so each ``reset`` is read from its own window: a key that has
spent no tokens has its tokens limit whole (``0ms``) however recently it made a request.
A 429 carries the key's whole quota, as an admitted request does: refused for ``rpm``, it
still says where its ``tpm`` stands (and the other way round).

The same with the in-process limiter and with Redis (every replica's), which must agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.redis_server import RedisServer
from tests.support.server import RunningServer

WINDOW_S = 600
LONGEST_RESET_S = WINDOW_S * 1.01 + 1  # Redis counts in buckets of 1% of the window
MESSAGES = [{"role": "user", "content": "Say something about the sea"}]
KEYS = [
    {"name": "fresh", "key": "k-fresh", "rpm": 10, "tpm": 1000},
    {"name": "tokens-only", "key": "k-tokens-only", "tpm": 1000},
    {"name": "rpm-hit", "key": "k-rpm-hit", "rpm": 2, "tpm": 1000},
    {"name": "tpm-hit", "key": "k-tpm-hit", "rpm": 100, "tpm": 1},
]
TOKENS = ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")
REQUESTS = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture(scope="module", params=["local", "redis"])
def server(
    request: pytest.FixtureRequest, start_server: Callable[..., RunningServer]
) -> RunningServer:
    state: dict[str, Any] = {}
    if request.param == "redis":
        state["redis_url"] = request.getfixturevalue("redis").url
    config = cluster_config(
        scripted("m", ["the sea is wide and deep"]),
        auth={"api_keys": KEYS, "window_s": WINDOW_S},
        state=state,
    )
    return start_server(config)


def ask(server: RunningServer, key: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"Authorization": f"Bearer k-{key}"},
        timeout=30,
    )


def seconds(text: str) -> float:
    """OpenAI's reset format (``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``) in seconds."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", text)
    assert parts is not None and text, f"not a reset duration: {text!r}"
    hours, minutes, secs = (float(p or 0) for p in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def test_a_key_that_spent_no_tokens_has_its_tokens_limit_whole(server: RunningServer) -> None:
    response = ask(server, "fresh")
    assert response.status_code == 200, response.text
    headers = response.headers
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert headers["x-ratelimit-remaining-tokens"] == "1000"
    assert headers["x-ratelimit-reset-tokens"] == "0ms"  # not the requests window's
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert 0.9 * WINDOW_S <= seconds(headers["x-ratelimit-reset-requests"]) <= LONGEST_RESET_S


def test_tokens_reset_is_read_from_the_tokens_window(server: RunningServer) -> None:
    """A key with ``tpm`` and no ``rpm``: its tokens reset counts once it spent some."""
    first = ask(server, "tokens-only")
    assert first.status_code == 200, first.text
    assert not any(name in first.headers for name in REQUESTS)

    def spent_seen() -> httpx.Response | None:
        response = ask(server, "tokens-only")
        left = int(response.headers["x-ratelimit-remaining-tokens"])
        return response if left < 1000 else None

    later = until(spent_seen, what="the first request's tokens counted")
    reset = seconds(later.headers["x-ratelimit-reset-tokens"])
    assert 0.9 * WINDOW_S <= reset <= LONGEST_RESET_S


def test_a_429_for_requests_says_where_the_tokens_stand(server: RunningServer) -> None:
    codes = [ask(server, "rpm-hit").status_code for _ in range(2)]
    assert codes == [200, 200]
    refused = ask(server, "rpm-hit")
    assert refused.status_code == 429, refused.text
    headers = refused.headers
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < seconds(headers["x-ratelimit-reset-requests"]) <= LONGEST_RESET_S
    assert all(name in headers for name in TOKENS), dict(headers)
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert 0 <= int(headers["x-ratelimit-remaining-tokens"]) <= 1000
    seconds(headers["x-ratelimit-reset-tokens"])  # in OpenAI's format
    assert "retry-after" in headers


def test_a_429_for_tokens_says_where_the_requests_stand(server: RunningServer) -> None:
    assert ask(server, "tpm-hit").status_code == 200

    def refused_for_tokens() -> httpx.Response | None:
        response = ask(server, "tpm-hit")
        return response if response.status_code == 429 else None

    refused = until(refused_for_tokens, what="the key's tokens counted")
    headers = refused.headers
    assert headers["x-ratelimit-limit-tokens"] == "1"
    assert headers["x-ratelimit-remaining-tokens"] == "0"
    assert 0.9 * WINDOW_S <= seconds(headers["x-ratelimit-reset-tokens"]) <= LONGEST_RESET_S
    assert all(name in headers for name in REQUESTS), dict(headers)
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert 0 < int(headers["x-ratelimit-remaining-requests"]) < 100
    assert 0.9 * WINDOW_S <= seconds(headers["x-ratelimit-reset-requests"]) <= LONGEST_RESET_S
