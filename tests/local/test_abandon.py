"""A local model stops generating for a client that left, and its slot waits for that.

The real SmolLM2 on one worker with one slot: a 500-token request (its end-of-text
tokens banned, so only a stop can cut it short) is abandoned after about a second, plain
and streamed; a short request sent right after it takes about what it takes alone (the
next request never waits inside the child behind work nobody reads), and the child's
log shows the abandoned generation stopped well short of its 500 tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config
from tests.local.models import smollm2
from tests.support.poll import until
from tests.support.server import RunningServer

# <|endoftext|> and <|im_end|>: banned, so the long request runs its 500 tokens unless stopped
NO_END = {"0": -100, "2": -100}
LONG = {
    "model": "chat",
    "messages": [{"role": "user", "content": "Count from 1 to 1000, one number per line."}],
    "max_tokens": 500,
    "temperature": 0,
    "logit_bias": NO_END,
}
SHORT = {
    "model": "chat",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 96,  # long enough that noticing the client left is a small part
    "temperature": 0,
    "logit_bias": NO_END,
}
ABANDON_AFTER_S = 1.0
# Had the short request waited inside the child for the abandoned one, it would have taken
# its own time plus the rest of 500 tokens: about (1 + 500/96) times its time alone. It
# must stay far below that; the order of the logs below proves the rest.
WAITED = 1 + LONG["max_tokens"] / SHORT["max_tokens"]


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    model = smollm2("chat")
    model["options"]["n_ctx"] = 1024  # room for the prompt and 500 tokens
    return start_server(cluster_config(model))


def short_time(server: RunningServer) -> float:
    started = time.perf_counter()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=SHORT, timeout=60)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == SHORT["max_tokens"]
    return elapsed


def alone(server: RunningServer) -> float:
    """The short request's time alone (the best of three: the machine is shared)."""
    return min(short_time(server) for _ in range(3))


def abandon_plain(server: RunningServer) -> None:
    """Send the long request and leave after about a second (a read timeout)."""
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json=LONG,
            timeout=httpx.Timeout(60, read=ABANDON_AFTER_S),
        )


def abandon_stream(server: RunningServer) -> None:
    """Stream the long request; leave after about a second of tokens."""
    body = {**LONG, "stream": True}
    url = f"{server.base_url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200
        started = time.perf_counter()
        for _ in response.iter_lines():
            if time.perf_counter() - started > ABANDON_AFTER_S:
                break


def stopped_events(server: RunningServer) -> list[dict[str, Any]]:
    return server.events("generation_stopped")


@pytest.mark.parametrize("abandon", [abandon_plain, abandon_stream], ids=["plain", "stream"])
def test_an_abandoned_request_stops_and_frees_the_model(
    server: RunningServer, abandon: Callable[[RunningServer], None]
) -> None:
    baseline = alone(server)
    seen = len(stopped_events(server))

    abandon(server)
    after = short_time(server)

    events = until(
        lambda: stopped_events(server)[seen:], what="the child to log the stopped generation"
    )
    (event,) = events
    generated = event.get("completion_tokens", event.get("chunks"))
    assert isinstance(generated, int) and generated < LONG["max_tokens"], event
    assert server.events("local_call_stopped")  # the worker waited for the child to stop
    # The child saw its caller leave mid-answer: said in one JSON line (the stop above),
    # never as aiohttp's multi-line traceback that breaks a JSON-lines log.
    log = server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
    assert server.events("local_call_stopped")[-1]["running"] is True
    # A ratio on a shared machine, with the margin of a whole generation: the short
    # request did not wait for the abandoned one's remaining tokens.
    assert after < 0.8 * WAITED * baseline, (
        f"the request after an abandoned one took {after:.2f}s, alone {baseline:.2f}s"
    )
