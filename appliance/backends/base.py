"""What a worker is: one instance of one model that answers OpenAI requests.

A worker takes the client's validated JSON object and answers with JSON bytes, or opens a
stream of JSON payloads (each becomes one SSE ``data:`` line). Backend failures leave a
worker only as :mod:`appliance.errors` exceptions.

A worker owns one piece of state: whether it is **up** (started, its process running, not
closed). It tells its listeners when that changes. Whether it is ejected belongs to the
health monitor, and its slots to the dispatcher (see
:class:`appliance.serving.registry.ModelGroup`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Protocol

from appliance.config import ModelConfig
from appliance.errors import ServiceUnavailableError
from appliance.wire.openai.fields import Fields
from appliance.wire.openai.protocol import Endpoint

Listener = Callable[["Worker"], None]


class ReplyStream(Protocol):
    """An opened stream: JSON payloads, then the end. Must be closed."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Worker(ABC):
    """One running instance of a model.

    Attributes:
        worker_id: ``<model>/<n>``, stable across reloads of an unchanged model.
        stoppable: Whether cancelling a call stops the model's work (a local model's
            child stops generating); an upstream's work runs on, so a plain call whose
            client left is waited for and charged in full.
        fields: The request fields this kind of worker takes, per operation; any other
            is refused with a 400 before dispatch (:mod:`appliance.wire.openai.fields`).
            ``None``: every field is passed on (an upstream decides what it takes).
    """

    stoppable = False
    fields: ClassVar[Fields | None] = None

    def __init__(self, worker_id: str, config: ModelConfig) -> None:
        self.worker_id = worker_id
        self.config = config
        self._listeners: list[Listener] = []
        self._is_started = False
        self._closed = False
        self._up = False
        self._started = asyncio.Event()

    @property
    def model(self) -> str:
        """The public model name this worker serves."""
        return self.config.name

    @property
    def up(self) -> bool:
        """Whether the worker can answer: started, running, and not closed."""
        return self._up

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun; a closed worker never comes up again."""
        return self._closed

    def watch(self, listener: Listener) -> None:
        """Call ``listener(worker)`` after every change of :attr:`up`."""
        self._listeners.append(listener)

    async def start(self) -> None:
        """Get ready to serve; called once before the first request."""
        self._is_started = True
        self._started.set()
        self._refresh()

    async def wait_ready(self) -> None:
        """Return once the worker can serve (local models load for a while)."""
        await self._started.wait()

    async def close(self) -> None:
        """Release everything; called once after the last request."""
        self._mark_closed()

    async def probe(self) -> None:
        """Check the worker can serve, without a model call; raise an APIError if not.

        A worker in this process is alive as long as it is not closed.
        """
        if self._closed:
            raise ServiceUnavailableError(f"worker {self.worker_id} is closed")

    @abstractmethod
    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        """Answer one request with the JSON reply body."""

    @abstractmethod
    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, usage: bool = False
    ) -> ReplyStream:
        """Start a streamed answer; returns once the backend has accepted the request.

        Args:
            endpoint: The operation.
            body: The client's validated request.
            usage: Ask the backend for a usage chunk at the end of the stream, even if the
                client did not (``stream_options.include_usage``), to count its tokens.
        """

    def describe(self) -> dict[str, Any]:
        """The worker's own operator-facing state, without secrets."""
        return {"id": self.worker_id, "backend": self.config.backend, "up": self._up}

    def _running(self) -> bool:
        """Whether whatever serves the requests is running (a child process, say)."""
        return True

    def _mark_closed(self) -> None:
        """From now on the worker is down for good."""
        self._closed = True
        self._refresh()

    def _refresh(self) -> None:
        """Recompute :attr:`up` and tell the listeners if it changed."""
        up = self._is_started and not self._closed and self._running()
        if up == self._up:
            return
        self._up = up
        for listener in list(self._listeners):
            listener(self)
