"""A local model's states, the moves between them, and what its lifecycle asks of others.

:class:`appliance.local.lifecycle.ModelLifecycle` is the only writer of a model's state,
through its ``_move``, which allows exactly the moves of :data:`MOVES`::

    unloaded --demand--> loading --a worker up--> loaded --idle, budget, admin--> unloading
      ^  ^                 |  |  ^                  |                                |
      |  +--no room (a     |  |  +--every child-----+                                |
      |     preload)-------+  |     exited                                           |
      +-------------------------------------- workers stopped ----------------------+
                              +--max_load_attempts failed--> failed --admin load--> loading
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from appliance.backends.base import Worker
from appliance.errors import ServiceUnavailableError


class State(StrEnum):
    """Where a local model is in its lifecycle."""

    UNLOADED = "unloaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


MOVES: dict[State, frozenset[State]] = {
    State.UNLOADED: frozenset({State.LOADING}),
    State.LOADING: frozenset({State.LOADED, State.UNLOADED, State.UNLOADING, State.FAILED}),
    State.LOADED: frozenset({State.UNLOADING, State.LOADING, State.UNLOADED}),
    State.UNLOADING: frozenset({State.UNLOADED}),
    State.FAILED: frozenset({State.LOADING, State.UNLOADED}),
}
"""Every move a lifecycle may make (to ``unloaded`` from ``loaded`` or ``failed``: closed)."""


@dataclass(frozen=True)
class LoadFailure:
    """Why the model did not load; when the next try is (``time.monotonic``), None: none."""

    reason: str
    retry_at: float | None


class Slots(Protocol):
    """What a lifecycle asks of its model's slots (the serving ``Dispatcher``)."""

    queue_timeout_s: float

    @property
    def queued(self) -> int: ...

    def waiting(self) -> list[asyncio.Future[Worker | None]]: ...

    def in_flight(self, worker: Worker) -> int: ...

    def fail_waiters(self, error: BaseException) -> int: ...


class Room(Protocol):
    """What a lifecycle asks of the memory budget (:class:`.residency.Residency`)."""

    async def make_room(self, model: Any, *, evict: bool = True) -> bool: ...

    def loaded(self, model: str, seconds: float, *, ok: bool) -> None: ...

    def unloaded(self, model: str, reason: str) -> None: ...


def load_failed(model: str, failure: LoadFailure, tries: int) -> ServiceUnavailableError:
    """The 503 ``model_load_failed`` for requests while ``failure`` stands."""
    if failure.retry_at is None:
        return ServiceUnavailableError(
            f"Model '{model}' failed to load {tries} time{'s' * (tries != 1)} in a row: "
            f"{failure.reason}. "
            "It is not tried again until an admin load (POST /admin/load) or a reload "
            "that changes it.",
            code="model_load_failed",
        )
    wait = max(1.0, failure.retry_at - time.monotonic())
    return ServiceUnavailableError(
        f"Model '{model}' failed to load: {failure.reason}. Next try in {wait:.0f}s.",
        code="model_load_failed",
        retry_after=wait,
    )
