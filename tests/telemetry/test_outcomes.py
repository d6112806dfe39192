"""What a model call's spans say of how it ended, as a trial with the openai SDK found it:
whether the request failed over after an attempt, what a reply (or none) leaves on the
call's span, the model the reply names, and a client that left before the first byte."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OTLPReceiver, Span, caller, trace
from tests.support.poll import until
from tests.support.server import RunningServer

ASK = [{"role": "user", "content": "Say hello."}]
ADMIN = "admin-outcomes"
USAGE = ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens")


def upstream_model(name: str, upstream: FakeUpstream, model: str, **more: Any) -> dict[str, Any]:
    options = {"base_url": upstream.base_url, "model": model}
    return {"name": name, "backend": "openai", "options": options, **more}


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer],
    upstream: FakeUpstream,
    receiver: OTLPReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> RunningServer:
    failing = {"health": {"failures": 1000}}  # never ejected: each test sees it fail
    return start_server(
        cluster_config(
            upstream_model("up", upstream, "ok"),
            upstream_model("unnamed", upstream, "ok+unnamed"),
            upstream_model("vectors", upstream, "ok", type="embedding"),
            upstream_model("midway", upstream, "break-mid-stream"),
            upstream_model("broken", upstream, "fail-503", **failing),
            upstream_model("down", upstream, "fail-502", **failing),
            routes=[
                {"alias": "fallback", "targets": ["broken", "up"]},
                {"alias": "nowhere", "targets": ["broken", "down"]},
            ],
            server={"admin_key": ADMIN},
            capture={
                "enabled": True,
                "models": ["up"],
                "path": str(tmp_path_factory.mktemp("requests")),
            },
            telemetry={"otlp_endpoint": receiver.endpoint},
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def attempts(spans: dict[str, list[Span]]) -> list[Span]:
    return sorted(spans["attempt"], key=lambda s: s.start_ns)


# 1. appliance.failover: the request moved on after this attempt.


def test_only_an_attempt_the_request_moved_on_from_says_failover(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    api.chat.completions.create(model="fallback", messages=ASK, extra_headers=headers)
    failed, answered = attempts(trace(receiver, trace_id))
    assert failed.attributes["appliance.failover"] is True
    assert "appliance.failover" not in answered.attributes

    # Both targets fail: the first attempt was followed by the second, the last by none.
    trace_id, headers = caller()
    with pytest.raises(openai.APIStatusError):
        api.chat.completions.create(model="nowhere", messages=ASK, extra_headers=headers)
    first, last = attempts(trace(receiver, trace_id))
    assert first.name == "attempt broken/0" and last.name == "attempt down/0"
    assert first.attributes["appliance.failover"] is True
    assert last.attributes["appliance.failover"] is False
    assert last.attributes["appliance.failover.reason"]  # still why the attempt failed
    assert last.attributes["error.type"] == "UpstreamServerError"


# 2. A call that got no reply has no response attributes and no usage.


def test_a_call_that_failed_before_any_reply_has_no_response_model_or_usage(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    with pytest.raises(openai.APIStatusError):
        api.chat.completions.create(model="broken", messages=ASK, extra_headers=headers)
    spans = trace(receiver, trace_id)
    (chat,) = spans["chat"]
    assert chat.status == 2 and chat.attributes["gen_ai.request.model"] == "broken"
    assert "gen_ai.response.model" not in chat.attributes
    assert not [name for name in USAGE if name in chat.attributes]
    (attempt,) = spans["attempt"]
    assert attempt.attributes["appliance.failover"] is False  # nowhere to fail over to


def test_a_stream_cut_midway_keeps_the_usage_it_was_charged(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    relayed = []
    with pytest.raises(openai.APIError):
        stream = api.chat.completions.create(
            model="midway", messages=ASK, stream=True, extra_headers=headers
        )
        relayed.extend(c.choices[0].delta.content for c in stream if c.choices)
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.status == 2
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0  # what was relayed, charged
    assert chat.attributes["gen_ai.response.model"] == "break-mid-stream"


# 3. A client that leaves before the first byte: its attempt says what its call says.


def test_a_client_that_left_before_the_first_byte_is_499_on_the_call_and_its_attempt(
    server: RunningServer, upstream: FakeUpstream, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    marker = uuid.uuid4().hex
    body = {
        "model": "up",
        "messages": [{"role": "user", "content": marker}],
        "stream": True,
        "x_first_delay_ms": 3000,
    }
    payload = orjson.dumps(body)
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"traceparent: {headers['traceparent']}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        until(
            lambda: any(marker in str(seen.body.get("messages")) for seen in upstream.requests),
            what="the upstream receiving the request",
        )
        sock.shutdown(socket.SHUT_RDWR)
    spans = trace(receiver, trace_id)
    assert spans["server"][0].attributes["http.response.status_code"] == 499
    (chat,) = spans["chat"]
    (attempt,) = spans["attempt"]
    assert chat.attributes["error.type"] == "499"
    assert attempt.attributes["error.type"] == "499" and attempt.status == 2
    assert "appliance.failover" not in attempt.attributes  # it did not fail: it was left
    # No reply came: nothing a reply would say (the ledger still charges its prompt).
    assert "gen_ai.response.model" not in chat.attributes
    assert not [name for name in USAGE if name in chat.attributes]


# 4. gen_ai.response.model is the model the reply names.


def test_the_response_model_is_the_one_the_reply_names(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    api.chat.completions.create(model="up", messages=ASK, extra_headers=headers)
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.attributes["gen_ai.request.model"] == "up"
    assert chat.attributes["gen_ai.response.model"] == "ok"  # the upstream's reply says

    trace_id, headers = caller()
    texts = [f"text {i}" for i in range(300)]  # a reply of kilobytes: named after its data
    api.embeddings.create(model="vectors", input=texts, extra_headers=headers)
    (call,) = trace(receiver, trace_id)["embeddings"]
    assert call.attributes["gen_ai.response.model"] == "ok"

    # A reply that names none: the model that answered.
    trace_id, headers = caller()
    api.chat.completions.create(model="unnamed", messages=ASK, extra_headers=headers)
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.attributes["gen_ai.response.model"] == "unnamed"


def test_a_streams_response_model_is_its_chunks_and_the_request_log_still_folds_it(
    api: openai.OpenAI, receiver: OTLPReceiver, server: RunningServer
) -> None:
    trace_id, headers = caller()
    rid = f"stream-{uuid.uuid4().hex[:8]}"
    stream = api.chat.completions.create(
        model="up", messages=ASK, stream=True, extra_headers={**headers, "x-request-id": rid}
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.attributes["gen_ai.response.model"] == "ok"
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    # The request log's fold got every chunk, the first one too.
    logged = until(
        lambda: httpx.get(
            f"{server.base_url}/admin/requests/{rid}",
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        ),
        accept=lambda r: r.status_code == 200,
        what=f"request {rid} in the log",
    ).json()
    assert logged["trace_id"] == trace_id
    assert logged["reply"]["model"] == "ok"
    assert logged["reply"]["choices"][0]["message"]["content"] == text

    trace_id, headers = caller()
    stream = api.chat.completions.create(
        model="unnamed", messages=ASK, stream=True, extra_headers=headers
    )
    assert [c for c in stream]
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.attributes["gen_ai.response.model"] == "unnamed"
