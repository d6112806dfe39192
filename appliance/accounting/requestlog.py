"""The request log: prompts and replies of the requests ``capture:`` selects, kept off the
request path.

A finished request's :class:`Capture` holds references only (the request body as it was
already parsed, the reply's bytes or a stream's reply folded as it was relayed);
:meth:`RequestLog.add` puts it on a bounded queue and returns. One thread of its own
takes captures off the queue in batches and does all the work there: the reply read,
the ``redact`` patterns applied to every string of prompt and reply, each cut at
``max_body_bytes``, then one transaction per day file (:mod:`.requestfiles`). A full
queue drops the capture and counts it
(``appliance_request_log_dropped_total{reason="queue_full"}``); a request never waits.
The same thread deletes expired day files at start and then every hour.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import structlog

from appliance.accounting.requestfiles import DayFiles, Entry, Summary
from appliance.config.capture import scrubber
from appliance.wire.openai.assemble import Fold

log = structlog.get_logger("appliance.requestlog")

BATCH = 256
EXPIRE_EVERY_S = 3600.0
_STOP = object()


class Capture(NamedTuple):
    """One finished request to keep, as the event loop hands it over (nothing computed)."""

    summary: Summary
    request: Any  # the body as parsed (a dict), never re-read
    reply: bytes | None  # a plain reply's body
    folded: Fold | None  # a stream's reply, folded as it was relayed
    folded_cut: bool  # the stream went on past what was folded (max_body_bytes)
    redact: tuple[str, ...]
    max_bytes: int


def entry_of(capture: Capture) -> Entry:
    """The row written for ``capture``: redacted, the stream folded, each body cut to size."""
    scrub = scrubber(capture.redact)
    request, cut_request = _kept(scrub(capture.request), capture.max_bytes)
    if capture.folded is not None:
        reply_obj: Any = capture.folded.reply()
    elif capture.reply is not None:
        try:
            reply_obj = orjson.loads(capture.reply)
        except orjson.JSONDecodeError:
            reply_obj = capture.reply.decode("utf-8", "replace")
    else:
        reply_obj = None
    reply, cut_reply = _kept(scrub(reply_obj), capture.max_bytes)
    return Entry(
        summary=capture.summary,
        request=request,
        reply=reply,
        truncated=cut_request or cut_reply or capture.folded_cut,
    )


def _kept(value: Any, max_bytes: int) -> tuple[str | None, bool]:
    """``value`` as JSON text, cut to ``max_bytes`` (and whether it was)."""
    if value is None:
        return None, False
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        text = orjson.dumps(str(value))
    if len(text) <= max_bytes:
        return text.decode(), False
    return text[:max_bytes].decode("utf-8", "ignore"), True


class RequestLog:
    """The queue, its writer thread and the folder's day files.

    Args:
        folder: Where the day files go (created when the first is written).
        retention_days: Days of files kept.
        size: Captures waiting at most; past it they are dropped.
        dropped: Counts a capture dropped, with why (``queue_full``, ``write_failed``).
    """

    def __init__(
        self,
        folder: Path,
        retention_days: int,
        size: int,
        dropped: Callable[[str, int], None] = lambda reason, n: None,
    ) -> None:
        self.folder = folder
        self.retention_days = retention_days
        self.dropped = dropped
        self.written = 0
        self._queue: queue.Queue[object] = queue.Queue(size)
        self._files = DayFiles(folder)
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        """Start the writer (which deletes expired files first)."""
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()

    def add(self, capture: Capture) -> None:
        """Queue ``capture``; dropped (and counted) if the queue is full."""
        try:
            self._queue.put_nowait(capture)
        except queue.Full:
            self.dropped("queue_full", 1)

    async def close(self) -> None:
        """Write what is queued, then stop the writer."""
        if self._thread is None:
            return
        await asyncio.to_thread(self._queue.put, _STOP)
        await asyncio.to_thread(self._thread.join)
        log.info("request_log_closed", folder=str(self.folder), written=self.written)

    def _run(self) -> None:
        next_expiry = 0.0
        try:
            while True:
                now = time.time()
                if now >= next_expiry:
                    self._expire(now)
                    next_expiry = now + EXPIRE_EVERY_S
                try:
                    item = self._queue.get(timeout=max(next_expiry - now, 0.01))
                except queue.Empty:
                    continue
                batch = [item]
                while len(batch) < BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                captures = [c for c in batch if isinstance(c, Capture)]
                if captures:
                    self._write(captures)
                if any(c is _STOP for c in batch):
                    return
        finally:
            self._files.close()

    def _write(self, captures: list[Capture]) -> None:
        entries = []
        for capture in captures:
            try:
                entries.append(entry_of(capture))
            except Exception:
                log.exception("request_capture_failed", request_id=capture.summary.id)
                self.dropped("write_failed", 1)
        try:
            self._files.write(entries)
        except Exception as exc:
            log.error("request_log_write_failed", error=str(exc), dropped=len(entries))
            self.dropped("write_failed", len(entries))
            return
        self.written += len(entries)

    def _expire(self, now: float) -> None:
        try:
            self._files.expire(now, self.retention_days)
        except OSError as exc:
            log.error("request_log_expiry_failed", error=str(exc))
