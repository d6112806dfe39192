"""Traces from the real server to a real OTLP/HTTP receiver: the spans of each API, their
GenAI attributes, failover, and propagation from the caller and to the upstream."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import anthropic
import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OTLPReceiver, caller, trace
from tests.support.poll import in_background, until
from tests.support.server import RunningServer

ASK = [{"role": "user", "content": "Say hello."}]
PROBES = ("/healthz", "/readyz", "/metrics")


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, receiver: OTLPReceiver
) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("bot", ["Hello there."]),
            scripted("vectors", type="embedding"),
            {
                "name": "up",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "ok"},
            },
            {
                "name": "broken",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "fail-503"},
            },
            {
                "name": "single",
                "backend": "openai",
                "max_concurrency": 1,
                "options": {"base_url": upstream.base_url, "model": "ok"},
            },
            routes=[{"alias": "fallback", "targets": ["broken", "up"]}],
            telemetry={"otlp_endpoint": receiver.endpoint, "service_name": "appliance-test"},
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_a_chat_call_has_a_server_span_a_chat_span_and_its_queue_and_attempt(
    api: openai.OpenAI, receiver: OTLPReceiver, server: RunningServer
) -> None:
    trace_id, headers = caller()
    reply = api.chat.completions.create(
        model="bot", messages=ASK, max_tokens=20, temperature=0.5, top_p=0.9, extra_headers=headers
    )
    assert reply.choices[0].message.content
    spans = trace(receiver, trace_id)
    (edge,) = spans["server"]
    assert edge.name == "POST /v1/chat/completions"
    assert edge.parent_id == headers["traceparent"].split("-")[2]  # the caller's span
    assert edge.attributes["http.request.method"] == "POST"
    assert edge.attributes["http.route"] == "/v1/chat/completions"
    assert edge.attributes["url.path"] == "/v1/chat/completions"
    assert edge.attributes["http.response.status_code"] == 200
    assert edge.resource["service.name"] == "appliance-test"
    (chat,) = spans["chat"]
    assert chat.name == "chat bot" and chat.kind == "client"
    assert chat.parent_id == edge.span_id
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "scripted"
    assert chat.attributes["gen_ai.request.model"] == "bot"
    assert chat.attributes["gen_ai.response.model"] == "bot"
    assert chat.attributes["gen_ai.request.max_tokens"] == 20
    assert chat.attributes["gen_ai.request.temperature"] == 0.5
    assert chat.attributes["gen_ai.request.top_p"] == 0.9
    assert reply.usage is not None
    assert chat.attributes["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert chat.attributes["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert chat.attributes["gen_ai.response.finish_reasons"] == [reply.choices[0].finish_reason]
    assert "gen_ai.input.messages" not in chat.attributes  # no content unless opted in
    assert chat.attributes["appliance.worker"] == "bot/0"
    # A slot was free and the first attempt answered: the chat span says it all.
    assert set(spans) == {"server", "chat"}
    # The access line names the same trace and the server span.
    (line,) = until(lambda: server.events("request", trace_id=trace_id))
    assert line["span_id"] == edge.span_id


def test_a_streamed_chat_has_its_time_to_first_token_and_finish_reason(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    stream = api.chat.completions.create(
        model="bot", messages=ASK, stream=True, extra_headers=headers
    )
    finish = [
        c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason
    ]
    (chat,) = trace(receiver, trace_id)["chat"]
    assert chat.attributes["appliance.stream"] is True
    assert chat.attributes["gen_ai.server.time_to_first_token"] > 0
    assert chat.attributes["gen_ai.response.finish_reasons"] == finish == ["stop"]
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0


def test_embeddings_have_an_embeddings_span(api: openai.OpenAI, receiver: OTLPReceiver) -> None:
    trace_id, headers = caller()
    api.embeddings.create(model="vectors", input=["a", "bc"], extra_headers=headers)
    (call,) = trace(receiver, trace_id)["embeddings"]
    assert call.name == "embeddings vectors"
    assert call.attributes["gen_ai.operation.name"] == "embeddings"
    assert call.attributes["gen_ai.usage.input_tokens"] > 0


def test_responses_and_messages_are_chat_spans(
    api: openai.OpenAI, receiver: OTLPReceiver, server: RunningServer
) -> None:
    trace_id, headers = caller()
    api.responses.create(model="up", input="Hi", max_output_tokens=30, extra_headers=headers)
    spans = trace(receiver, trace_id)
    (call,) = spans["chat"]
    assert spans["server"][0].attributes["http.route"] == "/v1/responses"
    assert call.attributes["gen_ai.request.max_tokens"] == 30
    assert call.attributes["gen_ai.provider.name"] == "openai"
    assert call.attributes["gen_ai.response.finish_reasons"] == ["stop"]

    trace_id, headers = caller()
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="none", max_retries=0)
    claude.messages.create(
        model="bot",
        max_tokens=25,
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers=headers,
    )
    spans = trace(receiver, trace_id)
    (call,) = spans["chat"]
    assert spans["server"][0].attributes["http.route"] == "/v1/messages"
    assert call.attributes["gen_ai.request.max_tokens"] == 25
    assert call.attributes["gen_ai.usage.output_tokens"] > 0


def test_the_upstream_gets_a_traceparent_of_the_callers_trace(
    api: openai.OpenAI, receiver: OTLPReceiver, upstream: FakeUpstream
) -> None:
    trace_id, headers = caller()
    before = len(upstream.requests)
    api.chat.completions.create(model="up", messages=ASK, extra_headers=headers)
    (seen,) = upstream.requests[before:]
    version, sent_trace, parent, flags = seen.headers["traceparent"].split("-")
    assert (version, sent_trace, flags) == ("00", trace_id, "01")
    (chat,) = trace(receiver, trace_id)["chat"]
    assert parent == chat.span_id  # the upstream's parent is the model call's span


def test_a_wait_for_a_slot_has_a_queue_span(server: RunningServer, receiver: OTLPReceiver) -> None:
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
    slow = {"x_first_delay_ms": 400}
    first, first_headers = caller()
    second, second_headers = caller()
    answered = in_background(
        lambda: api.chat.completions.create(
            model="single", messages=ASK, extra_body=slow, extra_headers=first_headers
        )
    )
    until(
        lambda: server.status()["models"],
        accept=lambda models: any(m["name"] == "single" and m["in_flight"] == 1 for m in models),
    )
    api.chat.completions.create(
        model="single", messages=ASK, extra_body=slow, extra_headers=second_headers
    )
    answered()
    assert "queue" not in trace(receiver, first)
    spans = trace(receiver, second)
    (queue,) = spans["queue"]
    assert queue.name == "queue single" and queue.parent_id == spans["chat"][0].span_id
    assert queue.attributes["appliance.wait"] == "queue"
    assert queue.end_ns - queue.start_ns > 100_000_000  # it waited for the first one


def test_a_failover_shows_both_attempts_and_why(
    api: openai.OpenAI, receiver: OTLPReceiver, upstream: FakeUpstream
) -> None:
    trace_id, headers = caller()
    before = len(upstream.requests)
    reply = api.chat.completions.create(model="fallback", messages=ASK, extra_headers=headers)
    assert reply.choices[0].message.content
    spans = trace(receiver, trace_id)
    failed, answered = sorted(spans["attempt"], key=lambda s: s.start_ns)
    (seen,) = [r for r in upstream.requests[before:] if r.body.get("model") == "ok"]
    assert seen.headers["traceparent"].split("-")[2] == answered.span_id
    assert failed.name == "attempt broken/0" and answered.name == "attempt up/0"
    assert failed.status == 2
    assert failed.attributes["appliance.failover"] is True
    assert failed.attributes["appliance.upstream.status_code"] == 503
    assert failed.attributes["appliance.failover.reason"]
    assert failed.attributes["error.type"]
    assert answered.status != 2
    (chat,) = spans["chat"]
    assert chat.name == "chat fallback"
    assert chat.attributes["gen_ai.request.model"] == "fallback"
    assert chat.attributes["gen_ai.response.model"] == "ok"  # as up's upstream's reply says


def test_a_failed_call_has_its_error_type_on_every_span(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    with pytest.raises(openai.APIStatusError) as failed:
        api.chat.completions.create(model="broken", messages=ASK, extra_headers=headers)
    status = failed.value.status_code
    assert status >= 500
    spans = trace(receiver, trace_id)
    (edge,) = spans["server"]
    assert edge.attributes["http.response.status_code"] == status
    assert edge.attributes["error.type"] == str(status) and edge.status == 2
    (chat,) = spans["chat"]
    (attempt,) = spans["attempt"]  # its one worker: nowhere else to fail over to
    assert attempt.attributes["error.type"] == "UpstreamServerError"
    # The model call failed with its last attempt's error.
    assert chat.status == 2 and chat.attributes["error.type"] == "UpstreamServerError"


def test_a_request_without_a_traceparent_starts_its_own_trace(
    server: RunningServer, receiver: OTLPReceiver
) -> None:
    for probe in ("/healthz", "/readyz", "/metrics"):  # polled all day: never traced
        httpx.get(f"{server.base_url}{probe}").raise_for_status()
    rid = f"req-{secrets.token_hex(4)}"
    httpx.get(f"{server.base_url}/v1/models", headers={"x-request-id": rid}).raise_for_status()
    (line,) = until(lambda: server.events("request", request_id=rid))
    spans = trace(receiver, str(line["trace_id"]))
    (edge,) = spans["server"]
    assert edge.parent_id == "" and edge.span_id == line["span_id"]
    assert edge.name == "GET /v1/models"
    assert set(spans) == {"server"}  # no model call
    # The probes came before, so they would have been exported by now.
    assert not [s for s in receiver.spans if s.attributes.get("url.path") in PROBES]
    (probe_line,) = server.events("request", path="/readyz")[-1:]
    assert "trace_id" not in probe_line


def test_a_malformed_traceparent_starts_a_trace_of_its_own(
    server: RunningServer, receiver: OTLPReceiver
) -> None:
    rid = f"req-{secrets.token_hex(4)}"
    headers = {"x-request-id": rid, "traceparent": "00-not-a-trace-01"}
    httpx.get(f"{server.base_url}/v1/models", headers=headers).raise_for_status()
    (line,) = until(lambda: server.events("request", request_id=rid))
    (edge,) = trace(receiver, str(line["trace_id"]))["server"]
    assert edge.parent_id == ""
