"""Upstream answers real servers send that the happy path never shows, end to end.

An nginx HTML page with a 502, a 429 with ``Retry-After``, base64 embeddings (the openai
SDK's default), a health probe that fails while requests would succeed, and a JSON reply
to a streamed request: each through the real server, with what the client gets and
where the README documents it, the failover.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, sse_payloads
from tests.support.fake_upstream import PROMPT_TOKENS, RETRY_AFTER_S, FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def proxied(name: str, served: str, base_url: str | list[str], **fields: Any) -> dict[str, Any]:
    """An ``openai`` model on the fake; probes off unless ``health`` says otherwise."""
    fields.setdefault("health", {"interval_s": 0})
    options = {"base_url": base_url, "model": served}
    return {"name": name, "backend": "openai", "options": options, **fields}


@pytest.fixture(scope="module")
def server(upstream: FakeUpstream, start_server: Callable[..., RunningServer]) -> RunningServer:
    """Each test asks its own models (a failing one may be ejected by its failures)."""
    url = upstream.base_url
    html, limited, no_stream = "fail-502+html", "fail-429+retry-after", "ok+stream-as-json"
    return start_server(
        cluster_config(
            proxied("html-502-plain", html, url, retries=0),
            proxied("html-502-stream", html, url, retries=0),
            proxied("html-502-sdk", html, url, retries=0),
            *(proxied(f"html-502-{n}", html, url) for n in ("plain-then", "stream-then")),
            *(proxied(f"ok-after-html-{n}", "ok", url) for n in ("plain", "stream")),
            proxied("limited", limited, url, retries=0),
            proxied("limited-sdk", limited, url, retries=0),
            proxied("limited-then", limited, url),
            proxied("ok-after-429", "ok", url),
            proxied(
                "limited-never-ejected",
                limited,
                url,
                retries=0,
                health={"interval_s": 0, "failures": 1},
            ),
            proxied("vectors", "ok", url, type="embedding"),
            proxied("vectors-split", "ok", url, type="embedding", workers=2),
            proxied("vectors-raw", "ok", url, type="embedding"),
            proxied("no-stream", no_stream, url),
            proxied("no-stream-code", no_stream, url),
            proxied("no-stream-plain", no_stream, url),
            proxied("no-stream-then", no_stream, url),
            proxied("ok-after-json", "ok", url),
            proxied("error-200-openai", "error-200+indented", url, retries=0),
            proxied("error-200-vllm", "error-200+vllm", url, retries=0),
            proxied("error-200-tgi", "error-200+tgi", url, retries=0),
            proxied("error-200-sdk", "error-200", url, retries=0),
            proxied("error-200-then", "error-200", url),
            proxied("ok-after-error-200", "ok", url),
            routes=[
                {
                    "alias": "html-route-plain",
                    "targets": ["html-502-plain-then", "ok-after-html-plain"],
                },
                {
                    "alias": "html-route-stream",
                    "targets": ["html-502-stream-then", "ok-after-html-stream"],
                },
                {"alias": "limited-route", "targets": ["limited-then", "ok-after-429"]},
                {"alias": "no-stream-route", "targets": ["no-stream-then", "ok-after-json"]},
                {"alias": "error-200-route", "targets": ["error-200-then", "ok-after-error-200"]},
            ],
        )
    )


def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def chat(server: RunningServer, model: str, **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **extra}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)


def assert_openai_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    return error


# An nginx 502 page --------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_html_502_page_reaches_the_client_as_a_json_502_envelope(
    server: RunningServer, upstream: FakeUpstream, stream: bool
) -> None:
    before = len(upstream.seen(model="fail-502+html"))
    response = chat(server, "html-502-stream" if stream else "html-502-plain", stream=stream)
    error = assert_openai_envelope(response, 502, "upstream_error")
    assert error["type"] == "server_error"
    assert "502" in error["message"]
    assert "<" not in error["message"] and "nginx" not in error["message"]
    assert len(upstream.seen(model="fail-502+html")) == before + 1, "retries: 0, one attempt"


def test_the_openai_sdk_sees_an_html_502_as_a_server_error(server: RunningServer) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        api(server).chat.completions.create(model="html-502-sdk", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


@pytest.mark.parametrize("stream", [False, True])
def test_an_html_502_fails_over_to_the_routes_next_target(
    server: RunningServer, upstream: FakeUpstream, stream: bool
) -> None:
    before = len(upstream.seen(model="fail-502+html"))
    response = chat(server, "html-route-stream" if stream else "html-route-plain", stream=stream)
    assert response.status_code == 200, response.text
    if stream:
        assert "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in sse_payloads(response.text)
            if isinstance(c, dict) and c.get("choices")
        ) == ("c0 c1 c2 ")
    else:
        assert response.json()["choices"][0]["message"]["content"] == "fake reply"
    assert len(upstream.seen(model="fail-502+html")) == before + 1


# A 200 whose body is an error object ----------------------------------------------------


@pytest.mark.parametrize(
    ("model", "status", "words"),
    [
        ("error-200-openai", 502, "The model is overloaded"),  # indented, a string code
        ("error-200-vllm", 400, "KV cache is full"),  # its code names a status
        ("error-200-tgi", 502, "out of memory"),
    ],
)
def test_a_200_whose_body_is_an_error_is_an_error_with_the_upstreams_words(
    server: RunningServer, model: str, status: int, words: str
) -> None:
    """Never relayed as a reply: a client SDK would find no choices in it. The status its
    code names when it names one, else 502; the upstream's own message either way."""
    response = chat(server, model)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"], error


def test_the_openai_sdk_gets_an_api_error_for_a_200_error_body(server: RunningServer) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        api(server).chat.completions.create(model="error-200-sdk", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert "overloaded" in str(caught.value)


def test_a_200_error_body_fails_over_to_the_routes_next_target(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    before = len(upstream.seen(model="error-200"))
    response = chat(server, "error-200-route")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fake reply"
    assert len(upstream.seen(model="error-200")) == before + 1


def test_a_200_error_body_reaches_an_anthropic_client_with_its_words(
    server: RunningServer,
) -> None:
    body = {"model": "error-200-sdk", "max_tokens": 16, "messages": MESSAGES}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=30)
    assert response.status_code == 502, response.text
    assert response.json()["type"] == "error"
    assert "overloaded" in response.json()["error"]["message"]


# A 429 with Retry-After ---------------------------------------------------------------


def test_an_upstream_429_is_relayed_with_its_retry_after_type_and_code(
    server: RunningServer,
) -> None:
    """README, Errors: relayed as a 429 with the upstream's type, code and Retry-After."""
    response = chat(server, "limited")
    error = assert_openai_envelope(response, 429, "fake")
    assert error["type"] == "fake_error"
    assert error["message"] == "fake says 429"
    assert response.headers["retry-after"] == str(RETRY_AFTER_S)


def test_the_openai_sdk_gets_a_rate_limit_error_it_may_retry(server: RunningServer) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        api(server).chat.completions.create(model="limited-sdk", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == str(RETRY_AFTER_S)
    assert caught.value.response.headers.get("x-should-retry") != "false"


def test_an_upstream_429_fails_over_to_the_routes_next_target(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    before = len(upstream.seen(model="fail-429+retry-after"))
    response = chat(server, "limited-route")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "fake reply"
    assert len(upstream.seen(model="fail-429+retry-after")) == before + 1


def test_upstream_429s_do_not_eject_the_worker(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    """README, Health: failed requests eject a worker, "not 429s". With ``failures: 1`` a
    second 429 reaches the upstream only if the first did not take the worker out."""
    before = len(upstream.seen(model="fail-429+retry-after"))
    for _ in range(3):
        assert chat(server, "limited-never-ejected").status_code == 429
    assert len(upstream.seen(model="fail-429+retry-after")) == before + 3
    assert not [
        e for e in server.events("worker_ejected") if e["worker"] == "limited-never-ejected/0"
    ]


# Base64 embeddings --------------------------------------------------------------------


@pytest.mark.parametrize("model", ["vectors", "vectors-split"])
def test_the_sdks_default_base64_embeddings_decode_to_the_upstreams_floats(
    server: RunningServer, upstream: FakeUpstream, model: str
) -> None:
    """The SDK asks for base64 unless told otherwise; the upstream answers base64 (as
    OpenAI does) and the SDK decodes it. Split over two workers, the parts' strings are
    merged in order."""
    texts = ["a", "bb", "ccc", "dddd"]
    before = len(upstream.seen())
    reply = api(server).embeddings.create(model=model, input=texts)
    sent = upstream.seen()[before:]
    assert sent and all(s.body["encoding_format"] == "base64" for s in sent)
    assert [d.index for d in reply.data] == [0, 1, 2, 3]
    assert [d.embedding for d in reply.data] == [[float(len(t)), 1.0] for t in texts]
    assert reply.usage.prompt_tokens == len(texts)
    floats = api(server).embeddings.create(model=model, input=texts, encoding_format="float")
    assert [d.embedding for d in floats.data] == [d.embedding for d in reply.data]


def test_base64_embeddings_reach_a_raw_client_as_the_upstream_sent_them(
    server: RunningServer,
) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/embeddings",
        json={"model": "vectors-raw", "input": ["abc"], "encoding_format": "base64"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    # [3.0, 1.0] as little-endian float32, base64-encoded
    assert response.json()["data"][0]["embedding"] == "AABAQAAAgD8="


# A failing health probe ---------------------------------------------------------------


def test_a_worker_whose_probe_fails_leaves_rotation_while_the_other_serves(
    upstream: FakeUpstream, start_server: Callable[..., RunningServer]
) -> None:
    """README, Health: a failed probe (an error status) takes a worker out of rotation,
    though its requests would succeed; /readyz and the status page show it ejected."""
    sick, well = upstream.url("probe-503"), upstream.url("well")
    probed = {"interval_s": 0.1, "timeout_s": 5}
    served = start_server(
        cluster_config(
            proxied("two-workers", "ok", [sick, well], health=probed),
            proxied("one-sick-worker", "ok", [sick], health=probed),
        )
    )

    def states(model: str) -> list[str]:
        body = httpx.get(f"{served.base_url}/readyz", timeout=10).json()
        return [w["state"] for w in body["models"][model]["workers"]]

    until(lambda: states("two-workers") == ["ejected", "healthy"], what="the sick worker out")
    assert any("probe failed" in str(e["why"]) for e in served.events("worker_ejected"))
    assert httpx.get(f"{served.base_url}/readyz", timeout=10).status_code == 200
    before = len(upstream.seen(base="probe-503"))
    for _ in range(6):
        assert chat(served, "two-workers").status_code == 200
    assert len(upstream.seen(base="probe-503")) == before, "no request for an ejected worker"
    assert upstream.probes_of["well"] > 0

    until(lambda: states("one-sick-worker") == ["ejected"], what="its only worker out")
    response = chat(served, "one-sick-worker")
    assert_openai_envelope(response, 503, "service_unavailable")
    assert "retry-after" in response.headers


# JSON in answer to a stream -----------------------------------------------------------


def test_a_json_reply_to_a_stream_request_is_a_502_before_any_byte(
    server: RunningServer,
) -> None:
    response = chat(server, "no-stream", stream=True)
    assert response.status_code == 502, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["type"] == "server_error"
    assert error["message"] == "The upstream answered a stream request with application/json"
    with pytest.raises(openai.InternalServerError):
        api(server).chat.completions.create(model="no-stream", messages=MESSAGES, stream=True)


def test_a_json_reply_to_a_stream_request_is_an_upstream_error_not_unreachable(
    server: RunningServer,
) -> None:
    response = chat(server, "no-stream-code", stream=True)
    assert_openai_envelope(response, 502, "upstream_error")


def test_the_same_upstream_serves_plain_requests(server: RunningServer) -> None:
    response = chat(server, "no-stream-plain")
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["prompt_tokens"] == PROMPT_TOKENS


def test_a_json_reply_to_a_stream_request_fails_over_to_the_next_target(
    server: RunningServer, upstream: FakeUpstream
) -> None:
    before = len(upstream.seen(model="ok+stream-as-json"))
    chunks = list(
        api(server).chat.completions.create(model="no-stream-route", messages=MESSAGES, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "c0 c1 c2 "
    assert len(upstream.seen(model="ok+stream-as-json")) == before + 1
