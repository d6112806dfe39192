"""What a model and its workers look like at one moment: for /readyz, the status page,
the gauges and drains (:meth:`appliance.serving.registry.ModelGroup.snapshot`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker's state at one moment, from each of its owners."""

    worker_id: str
    up: bool
    ejected: bool
    in_flight: int
    detail: dict[str, Any]

    @property
    def available(self) -> bool:
        """Whether it may take requests: up and not ejected."""
        return self.up and not self.ejected

    @property
    def state(self) -> str:
        """``healthy`` (available), ``ejected`` (up, out of rotation) or ``down``."""
        if not self.up:
            return "down"
        return "ejected" if self.ejected else "healthy"

    def as_dict(self) -> dict[str, Any]:
        """JSON for /readyz and /status.json; ``healthy`` means available."""
        return {
            **self.detail,
            "state": self.state,
            "healthy": self.available,
            "ejected": self.ejected,
            "in_flight": self.in_flight,
        }


@dataclass(frozen=True)
class ModelSnapshot:
    """One model's state at one moment."""

    name: str
    required: bool
    queued: int
    workers: tuple[WorkerSnapshot, ...]
    lifecycle: dict[str, Any] | None = None
    loadable: bool = False

    @property
    def available(self) -> bool:
        """Whether at least one worker may take requests."""
        return any(w.available for w in self.workers)

    @property
    def ready(self) -> bool:
        """Whether it can serve: available, or a local model that can be loaded."""
        return self.available or self.loadable

    @property
    def in_flight(self) -> int:
        """Requests its workers are serving."""
        return sum(w.in_flight for w in self.workers)

    def as_dict(self) -> dict[str, Any]:
        """JSON for /readyz and /status.json."""
        out: dict[str, Any] = {
            "available": self.available,
            "ready": self.ready,
            "required": self.required,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "workers": [w.as_dict() for w in self.workers],
        }
        if self.lifecycle is not None:
            out["lifecycle"] = self.lifecycle
        return out
