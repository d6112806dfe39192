"""The ``openai`` backend end to end: real server, real fake upstream, real clients."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer, free_port

UPSTREAM_KEY = "upstream-secret-key-123"
CLIENT_KEY = "client-key-456"


def proxied(name: str, upstream: FakeUpstream, served: str, **fields: Any) -> dict[str, Any]:
    options = {
        "base_url": upstream.base_url,
        "api_key": UPSTREAM_KEY,
        "model": served,
        **fields.pop("options", {}),
    }
    return {"name": name, "backend": "openai", "options": options, **fields}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, start_server: Callable[..., RunningServer]) -> RunningServer:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    return start_server(
        cluster_config(
            proxied("up", upstream, "ok", max_concurrency=8),
            proxied("up-500", upstream, "fail-500"),
            proxied("up-400", upstream, "fail-400"),
            proxied("up-401", upstream, "fail-401"),
            proxied("up-429", upstream, "fail-429"),
            proxied("up-hang", upstream, "hang", options={"first_byte_timeout_s": 0.5}),
            proxied("up-break", upstream, "break-mid-stream"),
            proxied("up-dribble", upstream, "ok+dribble+crlf+indented"),
            proxied("up-endless", upstream, "ok+endless-line"),
            # Not probed: a probe would eject it before the tests that expect its 502.
            proxied(
                "up-dead", upstream, "ok", options={"base_url": dead}, health={"interval_s": 0}
            ),
            proxied(
                "up-half-dead", upstream, "ok", options={"base_url": [dead, upstream.base_url]}
            ),
            proxied("up-embed", upstream, "ok", type="embedding", workers=2),
            proxied("up-rerank", upstream, "ok", type="rerank"),
            scripted("local", ["from", " local"]),
            routes=[{"alias": "chat", "targets": ["up-dead", "up-500", "local"]}],
            auth={"api_keys": [{"name": "ci", "key": CLIENT_KEY}]},
        )
    )


def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=CLIENT_KEY, max_retries=0)


def raw(server: RunningServer, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
        timeout=10,
    )


MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def test_plain_reply_is_relayed(server: RunningServer, upstream: FakeUpstream) -> None:
    reply = api(server).chat.completions.create(model="up", messages=MESSAGES)
    assert reply.choices[0].message.content == "fake reply"
    assert reply.model == "ok"


def test_upstream_gets_its_own_key_and_model_and_every_unknown_field(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    api(server).chat.completions.create(
        model="up",
        messages=MESSAGES,
        tools=tools,
        tool_choice="auto",
        seed=7,
        response_format={"type": "json_object"},
        extra_body={"x_vendor_flag": True},
    )
    seen = upstream.requests[-1]
    assert seen.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert CLIENT_KEY not in str(seen.headers)
    assert seen.body["model"] == "ok"
    assert seen.body["tools"] == tools
    assert seen.body["tool_choice"] == "auto"
    assert seen.body["seed"] == 7
    assert seen.body["response_format"] == {"type": "json_object"}
    assert seen.body["x_vendor_flag"] is True


def test_upstream_cookies_are_never_sent_back(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream
) -> None:
    """A gateway serves many callers over one pool: a cookie one reply set (a load
    balancer's, a session) must not ride on everyone's next requests."""
    model = proxied("m", upstream, "ok+sets-cookie")
    # By name, as real upstreams are reached: aiohttp's jar ignores cookies from IPs.
    model["options"]["base_url"] = upstream.base_url.replace("127.0.0.1", "localhost")
    served = start_server(cluster_config(model))
    for _ in range(2):
        reply = httpx.post(
            f"{served.base_url}/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            timeout=10,
        )
        assert reply.status_code == 200
        assert "set-cookie" not in reply.headers, "the upstream's cookie is not relayed either"
    sent = [seen for seen in upstream.requests if seen.body.get("model") == "ok+sets-cookie"]
    assert len(sent) == 2
    assert all("Cookie" not in seen.headers for seen in sent)


def test_a_200_that_is_not_json_is_an_upstream_error(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream
) -> None:
    served = start_server(cluster_config(proxied("m", upstream, "ok+html", retries=0)))
    for path, body in (
        ("/v1/chat/completions", {"model": "m", "messages": MESSAGES}),
        ("/v1/responses", {"model": "m", "input": "hi", "store": False}),
    ):
        reply = httpx.post(f"{served.base_url}{path}", json=body, timeout=10)
        assert reply.status_code == 502, (path, reply.text)
        assert reply.json()["error"]["code"] == "upstream_error"
        assert "not a JSON object (text/html" in reply.json()["error"]["message"]


def test_stream_is_relayed_chunk_by_chunk(server: RunningServer) -> None:
    stream = api(server).chat.completions.create(
        model="up",
        messages=MESSAGES,
        stream=True,
        extra_body={"x_chunks": 4, "x_chunk_delay_ms": 200},
    )
    arrivals, text = [], ""
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
            text += chunk.choices[0].delta.content
    assert text == "c0 c1 c2 c3 "
    # The upstream spaces its chunks 200 ms apart: relayed as they come, the first reaches
    # the client about 0.6 s before the last; buffered, all at once. (The spread, not each
    # gap: a busy machine may hold one chunk back and hand it over with the next.)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert arrivals[-1] - arrivals[0] > 0.3, f"chunks were buffered: gaps {gaps}"


def test_a_stream_split_anywhere_with_crlf_lines_is_relayed_whole(server: RunningServer) -> None:
    """Every event written 5 bytes at a time, CRLF line ends, multi-line JSON payloads."""
    stream = api(server).chat.completions.create(
        model="up-dribble",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"x_chunks": 5},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "c0 c1 c2 c3 c4 "
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_a_line_longer_than_the_read_buffer_ends_the_stream_with_an_error(
    server: RunningServer,
) -> None:
    started = time.monotonic()
    response = raw(server, "up-endless", stream=True)
    payloads = sse_payloads(response.text)
    assert time.monotonic() - started < 20  # not the upstream's 30 s
    assert payloads[-1] == "[DONE]"
    assert "oversized chunk" in payloads[-2]["error"]["message"]


def test_streamed_chunks_validate_against_openai_schema(server: RunningServer) -> None:
    response = raw(server, "up", stream=True)
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    for chunk in payloads[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)


@pytest.mark.parametrize(
    ("model", "status", "code", "retry"),
    [
        ("up-500", 502, "upstream_error", None),
        ("up-401", 502, "upstream_misconfigured", "false"),
        ("up-429", 429, "fake", None),
        ("up-400", 400, "fake", None),
        ("up-hang", 504, "upstream_timeout", None),
        ("up-dead", 502, "upstream_unreachable", None),
    ],
)
def test_upstream_failures_map_to_statuses(
    server: RunningServer, model: str, status: int, code: str, retry: str | None
) -> None:
    response = raw(server, model)
    assert response.status_code == status, response.text
    body = response.json()
    assert_valid("ErrorResponse", body)
    assert body["error"]["code"] == code
    assert response.headers.get("x-should-retry") == retry
    assert UPSTREAM_KEY not in response.text
    assert raw(server, "up").status_code == 200


def test_client_error_from_upstream_keeps_its_param(server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        api(server).chat.completions.create(model="up-400", messages=MESSAGES)
    assert caught.value.param == "messages"


def test_break_mid_stream_ends_with_error_event_then_done(server: RunningServer) -> None:
    response = raw(server, "up-break", stream=True)
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "upstream_unreachable"
    assert [p["choices"][0]["delta"]["content"] for p in payloads[:2]] == ["c0 ", "c1 "]


def test_break_mid_stream_raises_in_the_openai_client(server: RunningServer) -> None:
    stream = api(server).chat.completions.create(model="up-break", messages=MESSAGES, stream=True)
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_route_falls_back_to_the_next_target(server: RunningServer) -> None:
    reply = api(server).chat.completions.create(model="chat", messages=MESSAGES)
    assert reply.choices[0].message.content == "from local"
    assert reply.model == "local"


def test_dead_worker_fails_over_to_the_live_one(server: RunningServer) -> None:
    for _ in range(6):
        reply = api(server).chat.completions.create(model="up-half-dead", messages=MESSAGES)
        assert reply.choices[0].message.content == "fake reply"


def test_embeddings_batch_is_split_over_workers(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    before = len(upstream.requests)
    reply = api(server).embeddings.create(
        model="up-embed", input=["a", "bb", "ccc", "dddd"], encoding_format="float"
    )
    calls = upstream.requests[before:]
    assert sorted(len(c.body["input"]) for c in calls) == [2, 2]
    assert [d.index for d in reply.data] == [0, 1, 2, 3]
    assert [d.embedding[0] for d in reply.data] == [1.0, 2.0, 3.0, 4.0]
    assert reply.usage.prompt_tokens == 4


def test_rerank_is_proxied(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/rerank",
        json={"model": "up-rerank", "query": "q", "documents": ["a", "b"]},
        headers={"Authorization": f"Bearer {CLIENT_KEY}"},
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["index"] == 0


def test_upstream_key_never_reaches_the_log(server: RunningServer) -> None:
    raw(server, "up-401")
    raw(server, "up")
    until(lambda: server.events("request", path="/v1/chat/completions"), what="access lines")
    log = server.log()  # raw text on purpose: a key must appear in no line at all
    assert UPSTREAM_KEY not in log
    assert CLIENT_KEY not in log
