"""Spans as the request path records them: sampled as OpenTelemetry's SDK samples, written
to the wire as the SDK's encoder writes them, and taken by a real OTLP receiver."""

from __future__ import annotations

import random

import pytest
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    TraceFlags,
    set_span_in_context,
)

from appliance.telemetry import context, protobuf
from appliance.telemetry.otlp import Wire, clipped, readable
from appliance.telemetry.settings import Exporting
from appliance.telemetry.spans import CLIENT, INTERNAL, SERVER, Record, Sampler, trace_id
from appliance.telemetry.tracer import Tracing
from tests.support.otlp_receiver import OTLPReceiver, spans_of

RATIOS = (0.0, 1e-6, 0.1, 0.25, 0.5, 0.999, 1.0)
LIMIT = (1 << 64) - 1


def sdk_decides(ratio: float, tid: int, parent_flags: int | None) -> bool:
    sampler = ParentBased(TraceIdRatioBased(ratio))
    context = None
    if parent_flags is not None:
        span = SpanContext(tid, 0x1234, is_remote=True, trace_flags=TraceFlags(parent_flags))
        context = set_span_in_context(NonRecordingSpan(span))
    return sampler.should_sample(context, tid, "POST").decision.is_sampled()


@pytest.mark.parametrize("ratio", RATIOS)
def test_sampling_decides_as_the_sdks_parent_based_ratio_sampler(ratio: float) -> None:
    ours = Sampler(TraceIdRatioBased(ratio).bound)
    bound = ours.bound
    rng = random.Random(ratio)
    edges = [1, LIMIT, max(bound - 1, 1), bound, bound + 1, (7 << 64) | max(bound - 1, 1)]
    ids = [tid for tid in edges if tid] + [rng.getrandbits(128) or 1 for _ in range(3000)]
    sampled = 0
    for tid in ids:
        decided = ours.sampled(tid, None)
        assert decided == sdk_decides(ratio, tid, None), (ratio, hex(tid))
        sampled += decided
        # A caller's span decides whatever the ratio says.
        assert ours.sampled(tid, True) is sdk_decides(ratio, tid, 1) is True
        assert ours.sampled(tid, False) is sdk_decides(ratio, tid, 0) is False
    if ratio in (0.0, 1.0):
        assert sampled == ratio * len(ids)
    else:
        assert 0 < sampled < len(ids)


def records() -> list[Record]:
    """A trace with every kind of span and attribute the code records."""
    tid = trace_id()
    server = Record(
        "POST /v1/chat/completions",
        tid,
        0x00F067AA0BA902B7,
        SERVER,
        {"http.request.method": "POST", "url.path": "/v1/chat/completions"},
        remote_parent=True,
        tracestate="vendor=abc,tenant@sys=x-1",
    )
    chat = Record(
        "chat bot",
        tid,
        server.span_id,
        CLIENT,
        {
            "gen_ai.request.model": "bot",
            "gen_ai.request.temperature": 0.5,
            "gen_ai.request.max_tokens": 20,
            "gen_ai.usage.input_tokens": 0,
            "appliance.stream": True,
            "appliance.usage.estimated": False,
            "gen_ai.response.finish_reasons": ["stop", "length"],
            "gen_ai.input.messages": "héllo " * 3000,  # a length of several varint bytes
            "empty": "",
            "negative": -5,
            "huge": 1 << 70,  # no int64: the SDK leaves it out, and so does this
        },
        tracestate="vendor=abc,tenant@sys=x-1",
    )
    failed = Record("attempt broken/0", tid, chat.span_id, INTERNAL, {"error.type": "E"})
    failed.fail("upstream said 503")
    root = Record("GET /v1/models", trace_id(), 0, SERVER, {"http.response.status_code": 200})
    root.fail()
    return [r.end() for r in (failed, chat, server, root)]


def test_the_bytes_decode_to_what_the_sdks_encoder_makes(receiver: OTLPReceiver) -> None:
    wire = Wire(f"{receiver.endpoint}/v1/traces", {}, 2.0, "appliance-test")
    batch = records()
    ours = ExportTraceServiceRequest()
    ours.ParseFromString(protobuf.request(batch, *wire._frame))
    sdk = encode_spans(readable(batch, wire.resource, wire.scope))
    assert ours == sdk
    assert len(ours.resource_spans[0].scope_spans[0].spans) == 4
    wire.shutdown()


def test_clipped_values_are_what_the_sdks_span_limits_keep() -> None:
    batch = records()
    sdk = [BoundedAttributes(maxlen=None, attributes=r.attributes, max_value_len=4) for r in batch]
    cut = [clipped(record, 4) for record in batch]
    for mine, theirs in zip(cut, sdk, strict=True):
        assert {k: tuple(v) if isinstance(v, list) else v for k, v in mine.attributes.items()} == (
            dict(theirs)
        )


@pytest.mark.parametrize("route", ["bytes", "sdk"])
def test_a_batch_reaches_a_real_receiver(receiver: OTLPReceiver, route: str) -> None:
    wire = Wire(f"{receiver.endpoint}/v1/traces", {}, 2.0, "appliance-test")
    if route == "sdk":
        wire._post = None  # an exporter with no sending path of its own to hand bytes to
    batch = records()
    assert wire.send(batch)
    spans = {s.name: s for s in spans_of(receiver, f"{batch[0].trace_id:032x}")}
    assert set(spans) == {"attempt broken/0", "chat bot", "POST /v1/chat/completions"}
    server, chat, failed = (
        spans["POST /v1/chat/completions"],
        spans["chat bot"],
        spans["attempt broken/0"],
    )
    assert server.parent_id == "00f067aa0ba902b7" and server.kind == "server"
    assert chat.parent_id == server.span_id and chat.kind == "client"
    assert failed.parent_id == chat.span_id and failed.status == 2
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop", "length"]
    assert chat.attributes["gen_ai.request.temperature"] == 0.5
    assert chat.attributes["appliance.stream"] is True and chat.attributes["negative"] == -5
    assert "huge" not in chat.attributes
    assert chat.resource["service.name"] == "appliance-test"
    assert chat.start_ns == batch[1].start_ns and chat.end_ns == batch[1].end_ns
    wire.shutdown()


def flow(tracing: Tracing, headers: list[tuple[bytes, bytes]]) -> str:
    """One chat request's trace, begun and ended; the upstream's ``traceparent``."""
    trace = tracing.begin("POST", "/v1/chat/completions", headers)
    assert trace is not None
    trace.model_call("chat", "bot", {"max_tokens": 3}, ())
    with context.waiting("bot", lambda: False), context.attempt("bot/0", "scripted"):
        sent = context.traceparent()
    trace.end_model_call(
        response_model="bot", usage=None, finish_reasons=[], error=None, reply=None
    )
    trace.end(route="/v1/chat/completions", status=200)
    trace.detach()
    assert sent is not None and sent.split("-")[1] == trace.trace_id
    return sent


def test_a_request_not_sampled_records_nothing_and_says_so_upstream() -> None:
    never = Tracing(Exporting(endpoint="http://127.0.0.1:9/v1/traces", sample_ratio=0), print)
    assert flow(never, []).endswith("-00")
    assert not never.batch._queue
    # The caller's flag decides: not sampled, whatever the ratio.
    always = Tracing(Exporting(endpoint="http://127.0.0.1:9/v1/traces"), print)
    theirs = [(b"traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")]
    assert flow(always, theirs).startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert flow(always, theirs).endswith("-00") and not always.batch._queue
    # Sampled: the server span and the model call's, and the upstream is told so.
    assert flow(always, []).endswith("-01")
    assert [r.kind for r in always.batch._queue] == [CLIENT, SERVER]
