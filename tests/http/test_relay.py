"""The SSE relay closes its worker stream and charges it, however the response ends."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator

import pytest

from appliance.backends.upstream_sse import payloads
from appliance.errors import APIError, UpstreamConnectionError, UpstreamError
from appliance.http.sse import LiveStreams, Relay
from appliance.wire.sse import data
from appliance.wire.usage import StreamTally
from tests.support.poll import settled_async, until_async


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
    assert b"".join(frames) == b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    await relay.aclose()
    assert stream.closed == 1 and settled.calls == 1
    assert len(live) == 0


async def test_a_stream_that_fails_is_settled_with_its_error() -> None:
    broken = UpstreamConnectionError("The upstream connection failed")
    stream, settled = FakeStream([b'{"a":1}'], fail=broken), Settled()
    relay = Relay(stream, 5.0, LiveStreams(), on_close=settled)
    frames = [event.serialize() async for event in relay.events() if event is not None]
    sent = b"".join(frames)
    assert sent.startswith(b'data: {"a":1}\n\ndata: {"error":')  # what came, then the error
    assert b"upstream_unreachable" in sent and sent.endswith(b"data: [DONE]\n\n")
    assert settled.failures == [broken], "the ledger row gets the error's status, not 200"


async def test_a_corrupt_chunk_ends_the_stream_after_the_chunks_read_with_it() -> None:
    """Read in one batch with good chunks before it, it must not take them down with it."""
    stream, settled = FakeStream([b'{"a":1}', b'{"a":2}', b'{"a":', b'{"a":3}']), Settled()
    relay = Relay(stream, 5.0, LiveStreams(), StreamTally(client_asked=True), on_close=settled)
    frames = [event.serialize() async for event in relay.events() if event is not None]
    sent = b"".join(frames)
    assert sent.startswith(b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: {"error":')
    assert b"not valid JSON" in sent and b'{"a":3}' not in sent
    assert sent.endswith(b"data: [DONE]\n\n")
    assert [type(f) for f in settled.failures] == [UpstreamError]


def test_a_payload_of_several_lines_stays_one_event() -> None:
    frame = data(b'{\n  "a": 1\n}')
    assert frame == b'data: {\ndata:   "a": 1\ndata: }\n\n'


class TrickleStream(FakeStream):
    """Payloads that come ``gap_s`` apart, as tokens from a model."""

    def __init__(self, payloads: list[bytes], gap_s: float) -> None:
        super().__init__(payloads)
        self.gap_s = gap_s

    async def _iterate(self) -> AsyncIterator[bytes]:
        for payload in self.payloads:
            await asyncio.sleep(self.gap_s)  # the trickle itself: a slow model's tokens
            yield payload


async def test_a_burst_goes_out_as_one_write_and_a_trickle_as_it_comes() -> None:
    burst = [b'{"n":%d}' % i for i in range(16)]
    relay = Relay(FakeStream(burst), 5.0, LiveStreams())
    writes = [event.serialize() async for event in relay.events() if event is not None]
    assert len(writes) <= 2  # the burst and [DONE] (maybe split once by the reader's pace)
    assert b"".join(writes) == b"".join(b"data: " + p + b"\n\n" for p in burst) + (
        b"data: [DONE]\n\n"
    )

    relay = Relay(TrickleStream([b'{"a":1}', b'{"a":2}'], 0.05), 5.0, LiveStreams())
    events = relay.events()
    first = await anext(events)
    assert first is not None and first.serialize() == b'data: {"a":1}\n\n'
    rest = [event.serialize() async for event in events if event is not None]
    # The last payload and the end were there together: one write.
    assert rest == [b'data: {"a":2}\n\ndata: [DONE]\n\n']


async def test_each_read_from_an_upstream_goes_out_as_one_write() -> None:
    """What one network read brought is one write to the client (however many events it
    held), and the read that ends the stream carries ``[DONE]`` with it."""
    frames = [b'data: {"n":%d}\n\n' % i for i in range(16)]
    pieces = [b"".join(frames[:8]), b"".join(frames[8:]) + b"data: [DONE]\n\n"]
    gate = asyncio.Event()

    async def read() -> bytes:
        if len(pieces) == 1:
            await gate.wait()  # the second read comes after the first was written
        return pieces.pop(0) if pieces else b""

    class Upstream:
        closed = False

        def __aiter__(self) -> AsyncIterator[bytes]:
            return payloads(read)

        async def aclose(self) -> None:
            self.closed = True

    upstream = Upstream()
    relay = Relay(upstream, 5.0, LiveStreams(), StreamTally(client_asked=False))
    events = relay.events()
    first = await anext(events)
    gate.set()
    rest = [event.serialize() async for event in events if event is not None]
    assert first is not None and first.serialize() == b"".join(frames[:8])
    assert rest == [b"".join(frames[8:]) + b"data: [DONE]\n\n"]
    assert upstream.closed


async def test_a_slow_client_holds_the_worker_back() -> None:
    """The reader runs ahead of the client by a bounded queue, not by the whole stream."""
    produced: list[int] = []

    class Counting(FakeStream):
        async def _iterate(self) -> AsyncIterator[bytes]:
            for i in range(1000):
                produced.append(i)
                yield b"{}"

    relay = Relay(Counting([]), 5.0, LiveStreams())
    events = relay.events()
    await anext(events)
    # The client reads nothing more: the reader fills its queue and stops.
    assert await settled_async(lambda: len(produced)) < 100
    await events.aclose()
    await relay.aclose()


def current_task_cancelling() -> int:
    task = asyncio.current_task()
    assert task is not None
    return task.cancelling()


class GatedUpstream:
    """An upstream's SSE body (read as :func:`payloads` reads it) whose next read waits
    for ``gate``: a slow model between two chunks. Records its reads and being closed."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces
        self.gate = asyncio.Event()
        self.reads = 0
        self.waiting = False  # a read waits for the gate now
        self.closed = False

    async def read(self) -> bytes:
        if len(self.pieces) == 1:
            self.waiting = True
            try:
                await self.gate.wait()  # the last piece comes only once the test says so
            finally:
                self.waiting = False
        self.reads += 1
        return self.pieces.pop(0) if self.pieces else b""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return payloads(self.read)

    async def aclose(self) -> None:
        self.closed = True


async def test_a_slow_upstream_is_pinged_and_the_ping_loses_no_read() -> None:
    """While the next read is slow the relay pings (``None``); the read it interrupted is
    read again afterwards, nothing lost, nothing twice."""
    upstream = GatedUpstream([b'data: {"a":1}\n\n', b'data: {"a":2}\n\ndata: [DONE]\n\n'])
    relay = Relay(upstream, 0.05, LiveStreams(), StreamTally(client_asked=False))
    events = relay.events()
    first = await anext(events)
    assert first is not None and first.serialize() == b'data: {"a":1}\n\n'
    assert await anext(events) is None and await anext(events) is None  # two pings
    upstream.gate.set()
    rest = [event.serialize() async for event in events if event is not None]
    assert rest == [b'data: {"a":2}\n\ndata: [DONE]\n\n']
    assert upstream.reads == 2 and upstream.closed


async def test_a_client_leaving_while_the_relay_waits_for_the_upstream_ends_it_at_once() -> None:
    upstream, settled = GatedUpstream([b'data: {"a":1}\n\n', b"never read"]), Settled()
    relay = Relay(upstream, 30.0, LiveStreams(), on_close=settled)
    events = relay.events()
    assert await anext(events) is not None
    pending = asyncio.ensure_future(anext(events, "finished"))
    await until_async(lambda: upstream.waiting, what="the relay to wait for the upstream")
    relay.client_gone()  # as the access layer reports it, from another task
    assert current_task_cancelling() == 0, "the wake went to the task waiting, not this one"
    assert await asyncio.wait_for(pending, 10) == "finished"  # no ping, no [DONE]: it ended
    assert upstream.closed and settled.failures == [None]
    assert upstream.reads == 1, "nothing more was read from the upstream"


async def test_a_drain_ends_a_waiting_relay_with_its_error_event() -> None:
    upstream = GatedUpstream([b'data: {"a":1}\n\n', b"never read"])
    relay = Relay(upstream, 30.0, LiveStreams())
    events = relay.events()
    assert await anext(events) is not None
    pending = asyncio.ensure_future(anext(events))
    await until_async(lambda: upstream.waiting, what="the relay to wait for the upstream")
    relay.end(UpstreamConnectionError("The server is shutting down"))
    assert current_task_cancelling() == 0, "the wake went to the task waiting, not this one"
    last = await asyncio.wait_for(pending, 10)
    assert last is not None and last.serialize().startswith(b'data: {"error":')
    assert last.serialize().endswith(b"data: [DONE]\n\n") and upstream.closed


async def test_cancelling_the_task_that_sends_a_stream_is_not_taken_for_a_ping() -> None:
    upstream = GatedUpstream([b'data: {"a":1}\n\n', b"never read"])
    relay = Relay(upstream, 30.0, LiveStreams())

    async def send() -> list[object]:
        return [event async for event in relay.events()]

    task = asyncio.ensure_future(send())
    await until_async(lambda: upstream.waiting, what="the relay to wait for the upstream")
    task.cancel()  # a drain giving up on a client, or the server stopping
    with pytest.raises(asyncio.CancelledError):
        await task
    assert upstream.closed


class _SlowToStop:
    """A local model's stream (read through a prefetch task): stopping it takes a turn of
    the loop, as a child's stop call does; ``closed`` counts the slot given back."""

    def __init__(self) -> None:
        self.closed = 0
        self.reading = False

    async def _payloads(self) -> AsyncIterator[bytes]:
        self.reading = True
        try:
            while True:
                await asyncio.sleep(10)
                yield b'{"choices": []}'
        finally:
            await asyncio.sleep(0)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._payloads()

    async def aclose(self) -> None:
        self.closed += 1


async def test_a_second_cancellation_while_closing_still_gives_the_slot_back() -> None:
    stream, settled = _SlowToStop(), []

    async def on_close(failure: BaseException | None) -> None:
        settled.append(failure)

    relay = Relay(stream, 5, LiveStreams(), on_close=on_close)
    reading = asyncio.ensure_future(relay.events().__anext__())
    await until_async(lambda: stream.reading)
    relay.client_gone()
    await asyncio.sleep(0)  # the relay is closing: it awaits its reader's end
    reading.cancel()  # a shutdown's cancellation lands there
    with pytest.raises((asyncio.CancelledError, StopAsyncIteration)):
        await reading
    await relay.aclose()  # the request's own close: a no-op by now
    assert stream.closed == 1, "the worker's stream (its slot) was closed"
    assert len(settled) == 1


async def test_a_finished_relay_is_freed_at_once_not_by_the_garbage_collector() -> None:
    """Nothing of a relay is left in a reference cycle once it closed (its pinger's
    callback is its own method): one per stream, a collector left to free them cost
    about 10% of the relay's CPU."""
    upstream = GatedUpstream([b'data: {"a":1}\n\ndata: [DONE]\n\n'])
    upstream.gate.set()
    gone = weakref.ref(upstream)
    gc.disable()
    try:
        relay = Relay(upstream, 5.0, LiveStreams(), StreamTally(client_asked=False))
        assert [event async for event in relay.events() if event is not None]
        del relay, upstream
        assert gone() is None, "the relay and its worker's stream were freed"
    finally:
        gc.enable()
