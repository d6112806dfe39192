"""An upstream's response body as the relay reads it, and aiohttp's failures as errors.

:class:`UpstreamStream` is an ``openai`` worker's stream: the JSON payloads of the
response's SSE body (see :mod:`.upstream_sse`), read as the relay asks for them, with the
upstream's idle timeout (``idle_timeout_s``: the longest wait for its next read) kept by
one :class:`~appliance.runtime.watchdog.Watchdog` per stream, fed as each read begins,
rather than by aiohttp's ``sock_read``, which re-arms a timer for every network read (a
16-chunk stream arrives in as many). The wait for the response to begin is the worker's
first-byte deadline alone (``first_byte_timeout_s``: aiohttp's ``sock_read`` would cut a
reply that takes longer than ``idle_timeout_s`` to generate); a plain reply's body, and an
error's, are then read under aiohttp's ``sock_read`` of ``idle_timeout_s``
(:func:`idle_from_here`).

:func:`guard` maps aiohttp's exceptions into :mod:`appliance.errors` (with
:mod:`.openai`, the only place that sees them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp

from appliance.backends.scrub import Scrubber
from appliance.backends.upstream_sse import Payloads, payloads
from appliance.errors import UpstreamConnectionError, UpstreamTimeoutError
from appliance.runtime.watchdog import Watchdog

T = TypeVar("T")


class UpstreamStream:
    """The payloads of one upstream response; closing it closes the response (its
    connection goes back to the pool when the body was read to its end)."""

    __slots__ = ("_body", "_idle", "_interrupted", "_payloads", "_response", "_waiting")

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        choices: int,
        idle_s: float,
        scrub: Scrubber | None = None,
    ) -> None:
        self._response = response
        self._body = response.content
        self._payloads = payloads(self._read, choices, scrub)
        self._idle = Watchdog(self._timed_out, idle_s)  # fed as a read begins
        self._waiting = False
        # A read the relay interrupted (to send a ping): the next read goes on waiting for
        # the same silence, the ping is not the upstream's sign of life.
        self._interrupted = False
        connection = response.connection
        if connection is not None and connection.protocol is not None:
            # From here the idle timeout is this stream's (see the module docstring);
            # aiohttp drops its own timer at the next network read.
            connection.protocol.read_timeout = None

    def __aiter__(self) -> Payloads:
        return self._payloads

    async def _read(self) -> bytes:
        if self._interrupted:
            self._interrupted = False
        else:
            self._idle.feed()
        self._waiting = True
        try:
            return await guard(self._body.readany())
        except asyncio.CancelledError:
            self._interrupted = True
            raise
        finally:
            self._waiting = False

    def _timed_out(self) -> None:
        """``idle_s`` since a read began: fail it if the upstream is still awaited (if the
        relay was what took that long, the next read begins the wait afresh)."""
        if self._waiting or self._interrupted:
            # As aiohttp's sock_read does: the waiting (or next) read raises it (see guard).
            self._body.set_exception(aiohttp.SocketTimeoutError("Timeout on reading data"))

    async def aclose(self) -> None:
        self._idle.close()
        if self._payloads.ended and not self._body.is_eof():
            # The body's own end (its last chunk) usually comes right after [DONE], often
            # in a read of its own: one turn of the loop takes it in, and the connection
            # goes back to the pool instead of being closed.
            await asyncio.sleep(0)
        self._response.close()  # nothing left to do once the connection went back


def idle_from_here(response: aiohttp.ClientResponse, idle_s: float) -> None:
    """From now on, ``response``'s body must not stay silent for ``idle_s`` (aiohttp's
    ``sock_read``, armed now: the next network read re-arms it, the body's end drops it)."""
    connection = response.connection
    if connection is not None and connection.protocol is not None:
        connection.protocol.read_timeout = idle_s
        connection.protocol.start_timeout()


async def guard(operation: Awaitable[T]) -> T:
    """Await ``operation``, mapping aiohttp's failures into the error tree."""
    try:
        return await operation
    except TimeoutError as exc:
        raise UpstreamTimeoutError("The upstream did not answer in time") from exc
    except aiohttp.ClientConnectorError as exc:
        # The client is told why, never where (the upstream's host and port are the
        # operator's): the address stays in the log (see ``OpenAIWorker._post``).
        raise UpstreamConnectionError(
            f"Cannot connect to the upstream: {reason(exc.os_error)}"
        ) from exc
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        raise UpstreamConnectionError(
            f"The upstream connection failed: {type(exc).__name__}"
        ) from exc
    except ValueError as exc:  # aiohttp: a line longer than the read buffer
        raise UpstreamConnectionError("The upstream sent an oversized chunk") from exc


def reason(error: OSError) -> str:
    """What went wrong with a connection, without the address it was going to."""
    if isinstance(error, socket.gaierror):
        return "its host name could not be resolved"
    if isinstance(error, ssl.SSLError):
        return "the TLS handshake failed"
    if error.errno:
        text = os.strerror(error.errno)
        if not text.startswith("Unknown error"):
            return text.lower()
    return {
        ConnectionRefusedError: "connection refused",
        ConnectionResetError: "connection reset",
        TimeoutError: "connection timed out",
    }.get(type(error), "connection failed")
