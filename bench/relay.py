"""What relaying an upstream's stream costs: CPU per 16-chunk stream, the relay alone.

``python bench/relay.py`` runs the appliance's stream relay in-process on an upstream SSE
body that arrives in one network read (16 chat chunks as ``bench/upstream.py`` writes
them, the usage chunk, ``[DONE]``): the SSE reading (:mod:`appliance.backends.upstream_sse`),
the relay (:class:`appliance.http.sse.Relay`: its reader, the usage tally, the framing)
and the frames it hands to the server. No sockets, no HTTP server: what lies between the
upstream's bytes and the client's is all that is measured.

``python bench/relay.py --compare OLD NEW`` runs it with each tree's ``appliance`` first
on ``PYTHONPATH``, alternating five times, and prints both with their medians (as
``bench/edge.py --compare``). It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternate
from upstream import chunk

USAGE = b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1,"model":"bench",'
USAGE += b'"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":16,"total_tokens":21}}'
BODY = b"".join(chunk(i) for i in range(16)) + b"data: " + USAGE + b"\n\ndata: [DONE]\n\n"


async def measure(streams: int) -> float:
    """CPU microseconds per stream, after a warm-up."""
    from appliance.backends.upstream_sse import payloads
    from appliance.http.sse import LiveStreams, Relay
    from appliance.wire.usage import StreamTally

    class Upstream:
        def __init__(self) -> None:
            self.pieces = [BODY, b""]

        async def read(self) -> bytes:
            return self.pieces.pop(0)

        def __aiter__(self) -> AsyncIterator[bytes]:
            return aiter(payloads(self.read))

        async def aclose(self) -> None:
            return None

    live = LiveStreams()

    async def one() -> int:
        relay = Relay(Upstream(), 15.0, live, StreamTally(client_asked=False))
        sent = [len(event.serialize()) async for event in relay.events() if event is not None]
        return sum(sent)

    for _ in range(300):
        await one()
    started = time.process_time()
    for _ in range(streams):
        await one()
    return (time.process_time() - started) * 1e6 / streams


def show(args: argparse.Namespace, figure: float) -> None:
    print(f"{figure:.1f} CPU microseconds per 16-chunk stream (the relay alone)")


TABLE = alternate.Table(
    title="CPU microseconds per 16-chunk stream, {streams} a run, {rounds} runs each",
    row="old {old:.1f}, new {new:.1f}, new/old {ratio:.2f}\nruns: {runs}",
)


def main() -> None:
    alternate.main(
        __doc__,
        __file__,
        {"streams": 5000},
        rounds=5,
        measure=lambda args: alternate.on_uvloop(measure(args.streams)),
        show=show,
        table=TABLE,
        figures=lambda figure: {"stream": figure},
    )


if __name__ == "__main__":
    main()
