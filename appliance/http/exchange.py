"""One request's view of ASGI receive and send, watching for its client to leave.

Once the body has been read, a request that is still running after :data:`WATCH_AFTER_S`
starts one task that waits for ``http.disconnect`` (Falcon's own SSE watcher is fed from
it, so there is only ever one reader of ``receive``). When the client leaves:

- before the response began, a request that has not reached a model yet (waiting for a
  slot, a model's load) is cancelled, which frees its place, and so is a stream (closing
  it stops the model) and any call to a local model (its child stops generating); a
  plain call an upstream is working on runs to its end and is charged what the model
  produced, its response dropped;
- after the response began (a stream), the callbacks registered with
  :func:`on_disconnect` run, and the relay stops reading from the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from appliance.errors import APIError
from appliance.http.scope import SCOPE, RequestScope
from appliance.runtime.deadline import Deadline
from appliance.runtime.timers import Timer

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DISCONNECT = "appliance.disconnect"


class Sending(Protocol):
    """Where exchanges waiting on a send are known (:class:`~.sse.LiveStreams`)."""

    sending: set[Exchange]


def on_disconnect(scope: Scope, callback: Callable[[], None]) -> None:
    """Call ``callback`` if the client leaves while the response is being sent (at once,
    if it has left already)."""
    account: RequestScope | None = scope.get(SCOPE)
    if account is not None and account.client_gone:
        callback()
        return
    scope.setdefault(DISCONNECT, []).append(callback)


# A request still running this long after its body arrived starts watching for the
# client to leave; quicker ones (most) never pay for a watcher task.
WATCH_AFTER_S = 0.05


class Exchange:
    """One request's view of receive/send (see the module docstring).

    Attributes:
        status: The status sent (0: no response began).
        completed: Whether the whole response was sent.
        ended: The error the drain answers instead, once it ran out of time.
    """

    __slots__ = (
        "_body_done",
        "_gone",
        "_left",
        "_receive",
        "_send",
        "_timer",
        "_told",
        "_watcher",
        "account",
        "completed",
        "ended",
        "live",
        "request_id",
        "scope",
        "status",
        "task",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: bytes,
        account: RequestScope,
        live: Sending,
    ) -> None:
        self.scope = scope
        self.account = account
        self.live = live
        self._told = False
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.status = 0
        self.completed = False
        self.ended: APIError | None = None
        self.task = asyncio.current_task()
        self._watcher: asyncio.Future[Message] | None = None
        self._timer: Timer | None = None
        self._left: int | None = None
        self._body_done = False
        self._gone = False

    async def receive(self) -> Message:
        if self._body_done:
            # The body is read: whoever asks next (Falcon's SSE watcher) waits for ours.
            return await asyncio.shield(self._watch_now())
        message = await self._receive()
        if message["type"] == "http.request":
            # The body is complete at more_body=False or, since a reader that knows the
            # length stops asking once it has it, at Content-Length bytes.
            if self._left is None:
                self._left = _content_length(self.scope)
            self._left -= len(message.get("body", b""))
            if not message.get("more_body", False) or self._left <= 0:
                self._body_done = True
                self._timer = self.account.cluster.timers.call_later(WATCH_AFTER_S, self._watch_now)
        elif message["type"] == "http.disconnect":
            self._gone = True
            self.account.left()
        return message

    @property
    def gone(self) -> bool:
        """Whether the client left (also after the request's account was settled)."""
        return self._gone

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [*message.get("headers", ()), (b"x-request-id", self.request_id)]
            if (model := self.account.timing.model) is not None:  # the model that answered
                headers.append((b"x-appliance-model", model.encode()))
            message["headers"] = headers
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.completed = not self.gone
            # Charged before the client has it all: a client that spends again right
            # after its reply finds this request charged.
            await self.account.finish(self.status, completed=self.completed)
            if not self.gone:
                await self._send(message)
            # Reported as soon as the last bytes are handed over, before this task waits
            # for anything else: a client that reads the metrics right after its reply
            # finds the request counted.
            self.account.report()
            return
        if self.gone:
            return  # nobody to send to: a reply finished after its client left
        if message["type"] == "http.response.body" and message.get("more_body", False):
            await self._send_part(message)
            return
        await self._send(message)

    async def _send_part(self, message: Message) -> None:
        """Send part of a body (a stream's events): a client that does not take it within
        ``server.send_timeout_s`` (it stopped reading) counts as gone, and so does one
        still not taking it when the drain ends the streams."""
        self.live.sending.add(self)
        try:
            cluster = self.account.cluster
            with Deadline(cluster.config.server.send_timeout_s, cluster.timers):
                await self._send(message)
        except TimeoutError:
            self._client_left()
        finally:
            self.live.sending.discard(self)

    def abandon(self) -> None:
        """The drain ends this response while a send of it waits for the client: give up."""
        self._client_left()
        if self.task is not None:
            self.task.cancel()

    def end(self, error: APIError) -> None:
        """Answer ``error`` instead, unless the response has begun (a stream ends itself)."""
        if self.status or self.gone or self.task is None or self.ended is not None:
            return
        self.ended = error
        self.task.cancel()

    def _watch_now(self) -> asyncio.Future[Message]:
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        return self._watcher

    async def _watch(self) -> Message:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                break
        self._client_left()
        if not self.status and self.task is not None and self._abandon():
            self.task.cancel()
        return message

    def _client_left(self) -> None:
        """The client is gone: said once, to everyone who asked (the relay stops)."""
        if self._gone and self._told:
            return
        self._gone = self._told = True
        self.account.left()
        for callback in self.scope.get(DISCONNECT, ()):
            callback()

    def _abandon(self) -> bool:
        """Whether a request whose client left before its response is given up: one no
        model took yet (it waits for a slot or a load), a stream (closing it stops the
        model; it is charged what the model read), and a call to a worker that stops its
        work when cancelled (a local model; charged the prompt it read). A plain call an
        upstream is working on runs to its end: it is charged what the model produced."""
        account = self.account
        charge = account.charge
        if not account.reached_model or account.timing.stoppable:
            return True
        return charge is not None and charge.streamed

    async def finish(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._watcher is not None and not self._watcher.done():
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)


def _content_length(scope: Scope) -> int:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                break
    return 1 << 62  # unknown (chunked): wait for more_body=False
