"""The SSE relay closes its worker stream and charges it, however the response ends."""

from __future__ import annotations

from collections.abc import AsyncIterator

from appliance.api.sse import LiveStreams, Relay, data
from appliance.errors import APIError, UpstreamConnectionError


class FakeStream:
    """A worker stream of fixed payloads (then ``fail``, if given) that records being
    closed."""

    def __init__(self, payloads: list[bytes], fail: APIError | None = None) -> None:
        self.payloads = payloads
        self.fail = fail
        self.closed = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        for payload in self.payloads:
            yield payload
        if self.fail is not None:
            raise self.fail

    async def aclose(self) -> None:
        self.closed += 1


class Settled:
    def __init__(self) -> None:
        self.calls = 0
        self.failures: list[APIError | None] = []

    async def __call__(self, failure: APIError | None) -> None:
        self.calls += 1
        self.failures.append(failure)


async def test_a_relay_whose_events_never_started_still_closes_and_charges() -> None:
    stream, settled = FakeStream([b"{}"]), Settled()
    relay = Relay(stream, 5.0, LiveStreams(), on_close=settled)
    relay.events()  # made, never iterated: the client left before the response began
    await relay.aclose()
    assert stream.closed == 1 and settled.calls == 1


async def test_closing_twice_closes_and_charges_once() -> None:
    stream, settled = FakeStream([b'{"a":1}', b'{"a":2}']), Settled()
    live = LiveStreams()
    relay = Relay(stream, 5.0, live, on_close=settled)
    frames = [event.serialize() async for event in relay.events() if event is not None]
    assert frames == [b'data: {"a":1}\n\n', b'data: {"a":2}\n\n', b"data: [DONE]\n\n"]
    await relay.aclose()
    assert stream.closed == 1 and settled.calls == 1
    assert len(live) == 0


async def test_a_stream_that_fails_is_settled_with_its_error() -> None:
    broken = UpstreamConnectionError("The upstream connection failed")
    stream, settled = FakeStream([b'{"a":1}'], fail=broken), Settled()
    relay = Relay(stream, 5.0, LiveStreams(), on_close=settled)
    frames = [event.serialize() async for event in relay.events() if event is not None]
    assert frames[0] == b'data: {"a":1}\n\n'
    assert b"upstream_unreachable" in frames[1] and frames[-1] == b"data: [DONE]\n\n"
    assert settled.failures == [broken], "the ledger row gets the error's status, not 200"


def test_a_payload_of_several_lines_stays_one_event() -> None:
    frame = data(b'{\n  "a": 1\n}').serialize()
    assert frame == b'data: {\ndata:   "a": 1\ndata: }\n\n'
