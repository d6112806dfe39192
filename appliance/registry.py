"""The model registry: public names (models and route aliases) to model groups.

A :class:`ModelGroup` is one declared model: its config and its workers, with one owner
for each piece of their state. The worker owns whether it is up, the health monitor
whether it is ejected, the dispatcher its slots; the group's small API (acquire, release,
report, snapshot) is what the rest of the appliance uses. The registry resolves a name to
the ordered groups that may answer it: one for a model, the route's targets for an alias.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from appliance.clip import clip
from appliance.config import ApplianceConfig, ModelConfig
from appliance.dispatch import Dispatcher
from appliance.errors import ModelNotFoundError
from appliance.health import HealthMonitor
from appliance.workers import Worker, build_workers, thread_share


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

    @property
    def available(self) -> bool:
        """Whether at least one worker may take requests."""
        return any(w.available for w in self.workers)

    @property
    def in_flight(self) -> int:
        """Requests its workers are serving."""
        return sum(w.in_flight for w in self.workers)

    def as_dict(self) -> dict[str, Any]:
        """JSON for /readyz and /status.json."""
        return {
            "available": self.available,
            "required": self.required,
            "queued": self.queued,
            "in_flight": self.in_flight,
            "workers": [w.as_dict() for w in self.workers],
        }


class ModelGroup:
    """One declared model and its running workers.

    Args:
        config: The model's declaration.
        workers: Its (unstarted) workers.
    """

    def __init__(self, config: ModelConfig, workers: list[Worker]) -> None:
        self.config = config
        self.workers = workers
        self.health = HealthMonitor(workers, config.health, self._wake)
        self.dispatcher = Dispatcher(
            config.name,
            workers,
            available=self.health.available,
            max_concurrency=config.max_concurrency,
            queue_size=config.queue_size,
            queue_timeout_s=config.queue_timeout_s,
        )
        for worker in workers:
            worker.watch(self._worker_changed)

    @classmethod
    def from_config(cls, config: ModelConfig, *, threads: int | None = None) -> ModelGroup:
        """Build the group and its (unstarted) workers.

        Args:
            config: The model's declaration.
            threads: Default ``n_threads`` of local workers (see :func:`thread_share`).
        """
        return cls(config, build_workers(config, threads=threads))

    @property
    def name(self) -> str:
        """The public model name."""
        return self.config.name

    @property
    def required(self) -> bool:
        """Whether the replica is ready only while this model is available."""
        return self.config.needed_for_readiness

    def available_workers(self) -> list[Worker]:
        """The workers that may take requests now."""
        return self.dispatcher.healthy()

    async def acquire(self, exclude: Collection[Worker] = (), session: str | None = None) -> Worker:
        """Take a slot on a worker; give it back with :meth:`release` (see :class:`Dispatcher`)."""
        return await self.dispatcher.acquire(exclude, session)

    def release(self, worker: Worker) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self.dispatcher.release(worker)

    def report(self, worker: Worker, *, ok: bool) -> None:
        """A request on ``worker`` succeeded, or failed in a way another worker might not."""
        if ok:
            self.health.success(worker)
        else:
            self.health.failure(worker)

    def in_flight(self) -> int:
        """Requests the group's workers are serving now."""
        return sum(self.dispatcher.in_flight(w) for w in self.workers)

    def snapshot(self) -> ModelSnapshot:
        """The group's state now, for readiness, the status page, gauges and drains."""
        return ModelSnapshot(
            name=self.name,
            required=self.required,
            queued=self.dispatcher.queued,
            workers=tuple(
                WorkerSnapshot(
                    worker_id=w.worker_id,
                    up=w.up,
                    ejected=self.health.ejected(w),
                    in_flight=self.dispatcher.in_flight(w),
                    detail=w.describe(),
                )
                for w in self.workers
            ),
        )

    async def start(self) -> None:
        """Start every worker, then health checking."""
        await asyncio.gather(*(w.start() for w in self.workers))
        self.health.start()

    async def wait_ready(self) -> None:
        """Wait until every worker can serve."""
        await asyncio.gather(*(w.wait_ready() for w in self.workers))

    async def close(self) -> None:
        """Stop health checking and every worker."""
        await self.health.stop()
        await asyncio.gather(*(w.close() for w in self.workers), return_exceptions=True)

    def _worker_changed(self, worker: Worker) -> None:
        if worker.up:
            self._wake()

    def _wake(self) -> None:
        self.dispatcher.wake()


class Registry:
    """Every public name the appliance serves."""

    def __init__(
        self, groups: Iterable[ModelGroup], routes: dict[str, list[str]], created: int
    ) -> None:
        self.groups = {g.name: g for g in groups}
        self.routes = routes
        self.created = created
        self._resolved = {name: [g] for name, g in self.groups.items()}
        for alias, targets in routes.items():
            self._resolved[alias] = [self.groups[t] for t in targets]

    @classmethod
    def from_config(cls, config: ApplianceConfig) -> Registry:
        """Build groups for every declared model."""
        threads = thread_share(config)
        groups = [ModelGroup.from_config(m, threads=threads) for m in config.models]
        routes = {r.alias: list(r.targets) for r in config.routes}
        return cls(groups, routes, int(time.time()))

    def served_as(self, name: object) -> str:
        """``name`` if it is a public name, else ``-`` (for bounded metric labels)."""
        return name if isinstance(name, str) and name in self._resolved else "-"

    def public_ids(self) -> list[str]:
        """Model names, then aliases, in config order."""
        return list(self._resolved)

    def resolve(self, name: str) -> list[ModelGroup]:
        """The groups that may answer ``name``, in fallback order."""
        try:
            return self._resolved[name]
        except KeyError:
            raise ModelNotFoundError(
                f"The model `{clip(name)}` does not exist. "
                f"Available models: {', '.join(self.public_ids())}.",
                param="model",
            ) from None

    async def start(self) -> None:
        """Start every worker of every model."""
        await asyncio.gather(*(g.start() for g in self.groups.values()))

    async def close(self) -> None:
        """Stop every worker."""
        await asyncio.gather(*(g.close() for g in self.groups.values()))
