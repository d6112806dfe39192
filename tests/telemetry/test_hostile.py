"""Tracing against what a trial turned up: secrets in captured content, a hostile
``traceparent``, and which span a failed-over upstream call is told it belongs to."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp_receiver import OTLPReceiver, caller, spans_of
from tests.support.poll import until
from tests.support.server import RunningServer

KEY = "sk-" + "A1b2C3d4E5f6G7h8I9j0K1l2"
CARD = "4111 1111 1111 1111"
REDACT = ["sk-[A-Za-z0-9]{20,}", r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b"]  # the README's


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, receiver: OTLPReceiver
) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("bot", [f"Noted: card {CARD}, key {KEY}."]),
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
            routes=[{"alias": "fallback", "targets": ["broken", "up"]}],
            capture={"redact": REDACT},  # the request log is off: the patterns still apply
            telemetry={"otlp_endpoint": receiver.endpoint, "capture_content": True},
        )
    )


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_captured_content_has_the_redact_patterns_applied(
    api: openai.OpenAI, receiver: OTLPReceiver
) -> None:
    trace_id, headers = caller()
    ask = f"My card is {CARD} and my key {KEY}; also 4111-1111-1111-1111."
    reply = api.chat.completions.create(
        model="bot", messages=[{"role": "user", "content": ask}], extra_headers=headers
    )
    assert KEY in (reply.choices[0].message.content or "")  # the client gets its reply as is
    (chat,) = [s for s in spans_of(receiver, trace_id) if s.name == "chat bot"]
    said = chat.attributes["gen_ai.input.messages"]
    answered = chat.attributes["gen_ai.output.messages"]
    assert "My card is [redacted] and my key [redacted]; also [redacted]." in said
    assert "Noted: card [redacted], key [redacted]." in answered
    # Nothing of either secret reached the collector, in any span.
    everything = repr([s.attributes for s in receiver.spans])
    for secret in (KEY, CARD, "4111-1111", "A1b2C3d4"):
        assert secret not in everything


@pytest.mark.parametrize(
    "hostile",
    [
        "00-" + "a" * 32 + "-" + "b" * 16 + "-01" + "-x" * 300,  # over 512 characters
        "00-" + "0" * 32 + "-" + "b" * 16 + "-01",  # an all-zero trace id
        "zz-not-a-traceparent",
    ],
)
def test_a_hostile_traceparent_starts_a_new_trace_without_a_log_line(
    server: RunningServer, receiver: OTLPReceiver, hostile: str
) -> None:
    before = len(server.log().splitlines())
    rids = []
    for _ in range(5):
        rid = f"req-{secrets.token_hex(4)}"
        rids.append(rid)
        headers = {"x-request-id": rid, "traceparent": hostile, "tracestate": "=" * 600}
        httpx.get(f"{server.base_url}/v1/models", headers=headers).raise_for_status()
    for rid in rids:
        (line,) = until(lambda rid=rid: server.events("request", request_id=rid))
        (edge,) = spans_of(receiver, str(line["trace_id"]))
        assert edge.parent_id == ""  # a trace of its own
        assert line["trace_id"] not in hostile
    # Their access lines, and nothing else: not a word of the headers.
    since = server.log().splitlines()[before:]
    noise = [line for line in since if '"event":"request"' not in line]
    assert not noise


@pytest.mark.parametrize("tracestate", ["vendor=abc,tenant@sys=x-1", "Bad Member!", "k=v," * 40])
def test_a_valid_traceparent_is_continued_whatever_its_tracestate(
    server: RunningServer, receiver: OTLPReceiver, tracestate: str
) -> None:
    before = len(server.log().splitlines())
    trace_id, headers = caller()
    headers["tracestate"] = tracestate
    httpx.get(f"{server.base_url}/v1/models", headers=headers).raise_for_status()
    (edge,) = spans_of(receiver, trace_id)
    assert edge.parent_id == headers["traceparent"].split("-")[2]
    until(lambda: server.events("request", trace_id=trace_id), what="the access line")
    since = server.log().splitlines()[before:]
    assert [line for line in since if '"event":"request"' not in line] == []


def test_each_upstream_call_of_a_failover_names_its_span(
    api: openai.OpenAI, receiver: OTLPReceiver, upstream: FakeUpstream
) -> None:
    """The first attempt's upstream is told the model-call span (it stands for that
    attempt until it fails; its ``attempt`` span, made then, is the model call's child);
    the attempt after the failover is told its own ``attempt`` span."""
    trace_id, headers = caller()
    before = len(upstream.requests)
    api.chat.completions.create(
        model="fallback", messages=[{"role": "user", "content": "Hi"}], extra_headers=headers
    )
    spans = spans_of(receiver, trace_id)
    (chat,) = [s for s in spans if s.name == "chat fallback"]
    failed, answered = sorted(
        (s for s in spans if s.name.startswith("attempt ")), key=lambda s: s.start_ns
    )
    assert failed.name == "attempt broken/0" and answered.name == "attempt up/0"
    assert failed.parent_id == answered.parent_id == chat.span_id
    seen = {r.body.get("model"): r.headers["traceparent"] for r in upstream.requests[before:]}
    assert seen["fail-503"] == f"00-{trace_id}-{chat.span_id}-01"
    assert seen["ok"] == f"00-{trace_id}-{answered.span_id}-01"
