"""A child process's stderr, copied to ours, its last line kept (why a load failed)."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from appliance.clip import clip


class StderrTail:
    """Copies a child's stderr to ours, line by line, keeping its last non-empty line."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self.last = ""
        self._task = asyncio.ensure_future(self._copy(stream))

    async def done(self) -> None:
        """Wait (briefly) until the child's stderr is closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), 1.0)

    async def _copy(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ValueError, ConnectionError):  # ValueError: a huge line
            async for line in stream:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self.last = clip(text, 300)
