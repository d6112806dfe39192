"""What a worker is: one instance of one model that answers OpenAI requests.

A worker takes the client's validated JSON object and answers with JSON bytes, or opens a
stream of JSON payloads (each becomes one SSE ``data:`` line). Backend failures leave a
worker only as :mod:`appliance.errors` exceptions.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from appliance.config import ModelConfig
from appliance.errors import ServiceUnavailableError


class Endpoint(enum.Enum):
    """The OpenAI operations a worker may serve; the value is the upstream path."""

    CHAT = "chat/completions"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"
    RERANK = "rerank"


class ReplyStream(Protocol):
    """An opened stream: JSON payloads, then the end. Must be closed."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Worker(ABC):
    """One running instance of a model.

    Attributes:
        worker_id: ``<model>/<n>``, stable across reloads of an unchanged model.
        in_flight: Requests this worker is serving now (kept by the dispatcher).
        healthy: Whether the dispatcher may send it requests.
    """

    def __init__(self, worker_id: str, config: ModelConfig) -> None:
        self.worker_id = worker_id
        self.config = config
        self.in_flight = 0
        self.healthy = False
        self.closed = False
        self.on_ready: Callable[[], None] | None = None  # the dispatcher re-checks waiters
        self._started = asyncio.Event()

    @property
    def model(self) -> str:
        """The public model name this worker serves."""
        return self.config.name

    async def start(self) -> None:
        """Get ready to serve; called once before the first request."""
        self.healthy = True
        self._started.set()

    async def wait_ready(self) -> None:
        """Return once the worker can serve (local models load for a while)."""
        await self._started.wait()

    async def close(self) -> None:
        """Release everything; called once after the last request."""
        self.healthy = False
        self.closed = True

    async def probe(self) -> None:
        """Check the worker can serve, without a model call; raise an APIError if not.

        A worker in this process is alive as long as it is not closed.
        """
        if self.closed:
            raise ServiceUnavailableError(f"worker {self.worker_id} is closed")

    @abstractmethod
    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        """Answer one request with the JSON reply body."""

    @abstractmethod
    async def open_stream(self, endpoint: Endpoint, body: dict[str, Any]) -> ReplyStream:
        """Start a streamed answer; returns once the backend has accepted the request."""

    def describe(self) -> dict[str, Any]:
        """Operator-facing state, without secrets."""
        return {
            "id": self.worker_id,
            "backend": self.config.backend,
            "healthy": self.healthy,
            "in_flight": self.in_flight,
        }
