"""Reading ahead of a worker's stream that offers its payloads one at a time.

An upstream's stream hands the relay a read's worth of payloads at a time
(:meth:`appliance.backends.upstream_sse.Payloads.batch`), from the task that sends the
response. A local model's or the scripted backend's stream is an async generator of
single payloads, which a cancellation (the relay's ping) would end for good: a
:class:`Prefetch` reads it in a task of its own into a small bounded queue (a slow client
holds the worker back: nothing piles up) and offers the same ``batch()``, which may be
cancelled and called again without losing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

_QUEUE = 32  # payloads read ahead of the client at most
_END = object()  # the reader's last item after the stream's last payload


class Prefetch:
    """A stream of single payloads, read ahead and handed over as batches."""

    __slots__ = ("_items", "_queue", "_reader", "ended")

    def __init__(self, payloads: AsyncIterator[bytes]) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue(_QUEUE)
        self._reader = asyncio.ensure_future(self._read(payloads))
        self._items: list[object] = []
        self.ended = False  # the next batch() raises at once: the end, or the error

    async def batch(self) -> list[bytes]:
        """The payloads read since the last call (waiting for one); raises
        ``StopAsyncIteration`` at the end, or the stream's error after what came before it."""
        queue = self._queue
        if not self._items:
            self._items.append(await queue.get())
        items = self._items
        while not queue.empty():
            items.append(queue.get_nowait())
        out: list[bytes] = []
        for at, item in enumerate(items):
            if item is _END or isinstance(item, Exception):
                self._items = items[at:]
                self.ended = True
                break
            out.append(cast(bytes, item))
        else:
            self._items = []
        if out:
            return out
        if self._items[0] is _END:
            raise StopAsyncIteration
        raise cast(Exception, self._items[0])

    def stop(self) -> None:
        """Stop reading from the worker."""
        self._reader.cancel()

    async def aclose(self) -> None:
        if not self._reader.done():
            self._reader.cancel()  # the reader never raises: it queues what it met
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self, payloads: AsyncIterator[bytes]) -> None:
        """Read the worker's payloads into the queue, then the end (or the error)."""
        queue = self._queue
        try:
            async for payload in payloads:
                await queue.put(payload)
            await queue.put(_END)
        except Exception as exc:  # raised by batch(), in order, after what came before
            await queue.put(exc)
