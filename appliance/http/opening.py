"""A stream whose worker is still being found: the SSE response starts before it opens.

A streamed request for a local model that is not loaded would wait for the load (seconds)
before any byte reached the client, and proxies or clients that time out a silent
connection would drop it. For such a request the generation resource starts the SSE
response at once with an :class:`OpeningStream`: its first chunk waits for the stream
to open, so the relay sends ``: ping`` comments while the model loads, as it does while
a chunk is slow. A failure to open (the load failed, the queue timed out) then reaches
the client as an SSE error event, as any failure after the first byte does.

Only requests that would wait for a load take this path: the others open first, so their
errors keep their HTTP status (and fail over) as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from appliance.accounting.auth import Principal
from appliance.backends.base import ReplyStream
from appliance.serving.cluster import Cluster


class OpeningStream:
    """A :class:`ReplyStream` opened in the background; iterating it waits for the opening.

    Args:
        opening: Opens the real stream (``Gateway.open_stream``); it runs at once.
    """

    def __init__(self, opening: Coroutine[Any, Any, ReplyStream]) -> None:
        self._opening: asyncio.Task[ReplyStream] = asyncio.ensure_future(opening)
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        stream = await self._opening
        async for chunk in stream:
            yield chunk

    async def aclose(self) -> None:
        """Stop opening (freeing the queue place or slot) or close the opened stream."""
        if self._closed:
            return
        self._closed = True
        if not self._opening.done():
            self._opening.cancel()
        try:
            stream = await self._opening
        except BaseException:  # cancelled, or it never opened: nothing holds a slot
            return
        await stream.aclose()


async def start(
    opening: Coroutine[Any, Any, ReplyStream], cluster: Cluster, principal: Principal, model: str
) -> ReplyStream:
    """The stream ``opening`` opens: awaited now, or, for a request that would wait for
    ``model`` to load, an :class:`OpeningStream` so that the response starts at once.

    Every streaming resource (chat, Responses, Messages) opens its stream through here.
    """
    if principal.allows(model) and cluster.registry.waits_for_load(model, "llm"):
        return OpeningStream(opening)  # SSE pings while the model loads
    return await opening
