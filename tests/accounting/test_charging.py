"""Every token charged, whatever JSON layout the upstream writes (real server, real upstream).

The fake upstream's chat replies use 5 prompt + 2 completion tokens (7) and its streams
5 + 3 chunks (8). A key with ``tpm: 20`` is therefore admitted three times (0, 7 or 8,
then 14 or 16 tokens used: all under 20) and refused on the fourth request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer

LAYOUTS = {"compact": "ok", "spaced": "ok+spaced", "indented": "ok+indented"}
MODES = ("plain", "stream", "stream_usage")
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def key_name(layout: str, mode: str) -> str:
    return f"{layout}-{mode}"


def upstream_model(name: str, served: str, base_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "options": {"base_url": base_url, "model": served},
        "health": {"interval_s": 0},
    }


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer], upstream: FakeUpstream) -> RunningServer:
    url = upstream.base_url
    extra = {
        "nousage": "ok+nousage",
        "rejects": "ok+rejects-stream-options",
        "on-finish": "ok+usage-on-finish",
        "every": "ok+usage-every-chunk",
        "bad": "fail-400",
    }
    models = [upstream_model(f"up-{n}", s, url) for n, s in {**LAYOUTS, **extra}.items()]
    keys = [
        {"name": key_name(layout, mode), "key": f"k-{layout}-{mode}", "tpm": 20}
        for layout in [*LAYOUTS, *extra]
        for mode in MODES
    ]
    keys.append({"name": "open", "key": "k-open"})
    return start_server(cluster_config(*models, auth={"api_keys": keys, "window_s": 600}))


def request(server: RunningServer, layout: str, mode: str) -> httpx.Response:
    body: dict[str, Any] = {"model": f"up-{layout}", "messages": MESSAGES}
    if mode != "plain":
        body["stream"] = True
    if mode == "stream_usage":
        body["stream_options"] = {"include_usage": True}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer k-{layout}-{mode}"},
        timeout=10,
    )


def tokens_metric(server: RunningServer, model: str, kind: str) -> float:
    return server.metric("appliance_tokens_total", model=model, kind=kind)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_key_with_tpm_is_refused_after_the_expected_requests(
    server: RunningServer, layout: str, mode: str
) -> None:
    completion_before = tokens_metric(server, f"up-{layout}", "completion")
    codes = [request(server, layout, mode).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    per_request = 3 if mode.startswith("stream") else 2
    grown = tokens_metric(server, f"up-{layout}", "completion") - completion_before
    assert grown == 3 * per_request


@pytest.mark.parametrize("layout", LAYOUTS)
def test_stream_is_unchanged_when_the_client_did_not_ask_for_usage(
    server: RunningServer, layout: str
) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": f"up-{layout}", "messages": MESSAGES, "stream": True},
        headers={"Authorization": "Bearer k-open"},
    )
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    assert len(chunks) == 4  # three pieces of text and the finish
    assert all(chunk["choices"] and "usage" not in chunk for chunk in chunks)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_openai_client_gets_usage_last_when_it_asks(server: RunningServer, layout: str) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k-open", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model=f"up-{layout}",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "c0 c1 c2 "
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 8


@pytest.mark.parametrize("layout", ["on-finish", "every"])
def test_usage_on_other_chunks_is_charged_and_hidden(server: RunningServer, layout: str) -> None:
    response = request(server, layout, "stream")
    assert all(p == "[DONE]" or "usage" not in p for p in sse_payloads(response.text))
    codes = [request(server, layout, "stream").status_code for _ in range(3)]
    assert codes == [200, 200, 429]


@pytest.mark.parametrize("mode", MODES)
def test_upstream_without_usage_is_charged_an_estimate(server: RunningServer, mode: str) -> None:
    before = tokens_metric(server, "up-nousage", "prompt")
    codes = [request(server, "nousage", mode).status_code for _ in range(12)]
    assert codes[0] == 200 and 429 in codes, codes
    assert tokens_metric(server, "up-nousage", "prompt") > before
    assert server.event_count("usage_estimated", model="up-nousage") == 1  # said once


def test_upstream_that_refuses_stream_options_still_streams(server: RunningServer) -> None:
    response = request(server, "rejects", "stream")
    assert response.status_code == 200
    text = "".join(
        c["choices"][0]["delta"].get("content") or ""
        for c in sse_payloads(response.text)
        if c != "[DONE]" and c["choices"]
    )
    assert text == "c0 c1 c2 "
    codes = [request(server, "rejects", "stream").status_code for _ in range(12)]
    assert 429 in codes  # charged an estimate
    assert server.event_count("upstream_refuses_stream_options") == 1  # said once


def test_client_asking_usage_from_a_refusing_upstream_gets_its_error(
    server: RunningServer,
) -> None:
    response = request(server, "rejects", "stream_usage")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "stream_options"


def worker_state(server: RunningServer, model: str) -> dict[str, Any]:
    status = httpx.get(f"{server.base_url}/status.json").json()
    (entry,) = [m for m in status["models"] if m["name"] == model]
    return dict(entry["workers"][0])


def test_a_refusal_of_something_else_is_not_sent_twice(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    response = request(server, "bad", "stream")
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    assert len(upstream.requests) - before == 1
    assert worker_state(server, "up-bad")["stream_usage"] is True


def test_an_upstream_refusing_stream_options_is_shown_as_such(server: RunningServer) -> None:
    request(server, "rejects", "stream")
    assert worker_state(server, "up-rejects")["stream_usage"] is False
