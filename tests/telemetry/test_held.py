"""Spans that end before what they led to is known, in-process: a failed attempt waits for
whether its request failed over, a cancelled one for its model call's outcome. The parts
of a split request (tasks side by side) each fail over on their own."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from appliance.errors import UpstreamError
from appliance.telemetry import context
from appliance.telemetry.settings import Exporting
from appliance.telemetry.spans import Record
from appliance.telemetry.tracer import Trace, Tracing


def traced() -> tuple[Tracing, Trace]:
    tracing = Tracing(Exporting(endpoint="http://127.0.0.1:9/v1/traces"), print)
    trace = tracing.begin("POST", "/v1/embeddings", [])
    assert trace is not None
    trace.model_call("embeddings", "vectors", {}, ())
    return tracing, trace


def exported(tracing: Tracing, prefix: str = "attempt ") -> list[Record]:
    return [r for r in tracing.batch._queue if r.name.startswith(prefix)]


async def fails(worker: str, exc: BaseException) -> None:
    with contextlib.suppress(type(exc)), context.attempt(worker, "openai"):
        raise exc


async def answers(worker: str) -> None:
    with context.attempt(worker, "openai"):
        await asyncio.sleep(0)


def test_each_part_of_a_split_request_fails_over_on_its_own() -> None:
    tracing, trace = traced()
    first_failed = asyncio.Event()

    async def part_a() -> None:  # fails, then fails over
        await fails("a/0", UpstreamError("a/0 down"))
        first_failed.set()
        await asyncio.sleep(0)
        await answers("a/1")

    async def part_b() -> None:  # fails after a's failure, and has nowhere to go
        await first_failed.wait()
        await fails("b/0", UpstreamError("b/0 down"))

    async def run() -> None:
        await asyncio.gather(part_a(), part_b())

    asyncio.run(run())
    # a/0 is out once a/1 began; b/0 waits for the call's end.
    assert [r.name for r in exported(tracing)] == ["attempt a/0", "attempt a/1"]
    trace.end_model_call(
        response_model=None, usage=None, finish_reasons=[], error="UpstreamError", reply=None
    )
    spans = {r.name: r for r in exported(tracing)}
    assert spans["attempt a/0"].attributes["appliance.failover"] is True
    assert spans["attempt b/0"].attributes["appliance.failover"] is False
    assert "appliance.failover" not in spans["attempt a/1"].attributes


@pytest.mark.parametrize("outcome", ["499", "504"])
def test_a_cancelled_attempt_says_what_ended_its_call(outcome: str) -> None:
    tracing, trace = traced()

    async def run() -> None:
        await fails("w/0", UpstreamError("w/0 down"))
        await fails("w/1", asyncio.CancelledError())

    asyncio.run(run())
    assert [r.name for r in exported(tracing)] == ["attempt w/0"]  # w/1 waits for why
    trace.end_model_call(
        response_model=None, usage=None, finish_reasons=[], error=outcome, reply=None
    )
    spans = {r.name: r for r in exported(tracing)}
    assert spans["attempt w/1"].attributes["error.type"] == outcome
    assert spans["attempt w/1"].status == 2
    (call,) = exported(tracing, "embeddings ")
    # Not the earlier attempt's error: the call ended with the cancellation.
    assert call.attributes["error.type"] == outcome
    # A part that ends after its call (a split request's) is sent at once, with it.
    asyncio.run(fails("w/2", asyncio.CancelledError()))
    assert [r.name for r in exported(tracing)][-1] == "attempt w/2"
    assert exported(tracing)[-1].attributes["error.type"] == outcome
