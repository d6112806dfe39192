"""The model registry: public names (models and route aliases) to model groups.

A :class:`ModelGroup` is one declared model: its config and its workers, with one owner
for each piece of their state. The worker owns whether it is up, the health monitor
whether it is ejected, the dispatcher its slots, and for a local model its lifecycle
(:mod:`appliance.local.lifecycle`) whether its workers are loaded; the group's small API
(acquire, release, report, snapshot) is what the rest of the appliance uses. The
registry resolves a name to the ordered groups that may answer it: one for a model, the
route's targets for an alias.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from typing import Any

from appliance.backends.base import Worker
from appliance.clip import clip
from appliance.config import ApplianceConfig, ModelConfig, Priority
from appliance.config.backends import LlamaCppModel, OnnxModel
from appliance.errors import InvalidRequestError, ModelNotFoundError
from appliance.local.lifecycle import ModelLifecycle
from appliance.local.residency import Residency
from appliance.local.states import State
from appliance.local.threads import thread_share
from appliance.local.worker import LocalWorker
from appliance.serving.dispatch import Dispatcher
from appliance.serving.health import HealthMonitor
from appliance.serving.snapshots import ModelSnapshot, WorkerSnapshot
from appliance.serving.workers import build_workers
from appliance.wire.openai.protocol import Endpoint


class ModelGroup:
    """One declared model and its running workers.

    Args:
        config: The model's declaration.
        workers: Its (unstarted) workers.
        residency: The memory budget of local models (a local model gets a lifecycle);
            none: a budget of its own, unlimited.
    """

    def __init__(
        self, config: ModelConfig, workers: list[Worker], residency: Residency | None = None
    ) -> None:
        self.config = config
        self.workers = workers
        self.health = HealthMonitor(workers, config.health, self._wake)
        self.dispatcher = Dispatcher(
            config.name,
            workers,
            available=self._available,
            max_concurrency=config.max_concurrency,
            queue_size=config.queue_size,
            queue_timeout_s=config.queue_timeout_s,
            coming=self._coming,
        )
        self.lifecycle: ModelLifecycle | None = None
        local = [w for w in workers if isinstance(w, LocalWorker)]
        if isinstance(config, LlamaCppModel | OnnxModel) and len(local) == len(workers):
            self.lifecycle = ModelLifecycle(
                config, local, self.dispatcher, residency or Residency()
            )
        for worker in workers:
            worker.watch(self._worker_changed)

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        *,
        threads: int | None = None,
        residency: Residency | None = None,
    ) -> ModelGroup:
        """Build the group and its (unstarted) workers.

        Args:
            config: The model's declaration.
            threads: Default ``n_threads`` of local workers (see :func:`thread_share`).
            residency: The memory budget of local models.
        """
        return cls(config, build_workers(config, threads=threads), residency)

    @property
    def name(self) -> str:
        """The public model name."""
        return self.config.name

    @property
    def required(self) -> bool:
        """Whether the replica is ready only while this model is available."""
        return self.config.needed_for_readiness

    def refusal(self, endpoint: Endpoint, body: dict[str, Any]) -> InvalidRequestError | None:
        """The 400 naming a field of ``body`` this model's backend does not take, if any
        (see :attr:`Worker.fields <appliance.backends.base.Worker.fields>`)."""
        fields = self.workers[0].fields if self.workers else None
        return None if fields is None else fields.refusal(endpoint, body, self.config.backend)

    def available_workers(self) -> list[Worker]:
        """The workers that may take requests now."""
        return self.dispatcher.healthy()

    async def acquire(
        self,
        exclude: Collection[Worker] = (),
        session: str | None = None,
        priority: Priority = "standard",
        key: str = "anonymous",
    ) -> Worker:
        """Take a slot on a worker; give it back with :meth:`release` (see :class:`Dispatcher`).

        A local model that is not loaded starts loading, and the request waits for it.
        """
        if self.lifecycle is not None:
            self.lifecycle.demand()
        return await self.dispatcher.acquire(exclude, session, priority, key)

    def release(self, worker: Worker) -> None:
        """Give back a slot taken with :meth:`acquire`."""
        self.dispatcher.release(worker)
        if self.lifecycle is not None:
            self.lifecycle.touch()

    def waits_for_load(self) -> bool:
        """Whether a request now would wait for the model to load (or to come back)."""
        lifecycle = self.lifecycle
        if lifecycle is None:
            return False
        return lifecycle.coming or lifecycle.state is State.UNLOADED

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
        lifecycle = self.lifecycle
        return ModelSnapshot(
            name=self.name,
            required=self.required,
            queued=self.dispatcher.queued,
            lifecycle=lifecycle.describe() if lifecycle is not None else None,
            loadable=lifecycle is not None and lifecycle.loadable,
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
        """Start every worker, then health checking; a local model loads if it should."""
        await asyncio.gather(*(w.start() for w in self.workers))
        self.health.start()
        if self.lifecycle is not None:
            self.lifecycle.start()

    async def wait_ready(self) -> None:
        """Wait until every worker can serve (an on-demand model: at once).

        Raises:
            RuntimeError: a local model failed to load ``max_load_attempts`` times.
        """
        lifecycle = self.lifecycle
        if lifecycle is not None and lifecycle.config.load == "on_demand":
            return
        ready = asyncio.ensure_future(asyncio.gather(*(w.wait_ready() for w in self.workers)))
        try:
            while not ready.done():
                if lifecycle is not None and lifecycle.state is State.FAILED:
                    reason = lifecycle.error.reason if lifecycle.error else "unknown"
                    raise RuntimeError(f"model '{self.name}' failed to load: {reason}")
                await asyncio.wait([ready], timeout=0.1)
        finally:
            ready.cancel()
        await ready

    async def close(self) -> None:
        """Stop health checking, loading and every worker (a local model's lifecycle
        stops its own, and leaves the memory budget)."""
        await self.health.stop()
        workers = self.workers
        if self.lifecycle is not None:
            await self.lifecycle.close()
            workers = [w for w in workers if w not in self.lifecycle.workers]
        await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)

    def _available(self, worker: Worker) -> bool:
        """Whether ``worker`` may take requests: up, not ejected, and not unloading."""
        lifecycle = self.lifecycle
        return (lifecycle is None or lifecycle.admits) and self.health.available(worker)

    def _coming(self) -> bool:
        return self.lifecycle is not None and self.lifecycle.coming

    def _worker_changed(self, worker: Worker) -> None:
        if worker.up:
            self._wake()

    def _wake(self) -> None:
        self.dispatcher.wake()


class Registry:
    """Every public name the appliance serves."""

    def __init__(
        self,
        groups: Iterable[ModelGroup],
        routes: dict[str, list[str]],
        created: int,
        spill_after_s: dict[str, float] | None = None,
    ) -> None:
        self.groups = {g.name: g for g in groups}
        self.routes = routes
        self.spill_after_s = spill_after_s or {}  # the routes that spill on expected wait
        self.created = created
        self._resolved = {name: [g] for name, g in self.groups.items()}
        for alias, targets in routes.items():
            self._resolved[alias] = [self.groups[t] for t in targets]

    @classmethod
    def from_config(cls, config: ApplianceConfig, residency: Residency | None = None) -> Registry:
        """Build groups for every declared model."""
        threads = thread_share(config)
        groups = [
            ModelGroup.from_config(m, threads=threads, residency=residency) for m in config.models
        ]
        return cls.of(config, groups, int(time.time()))

    @classmethod
    def of(cls, config: ApplianceConfig, groups: list[ModelGroup], created: int) -> Registry:
        """The registry of ``groups`` (built or carried over) with ``config``'s routes."""
        routes = {r.alias: list(r.targets) for r in config.routes}
        spill = {r.alias: r.spill_after_s for r in config.routes if r.spill_after_s is not None}
        return cls(groups, routes, created, spill)

    def lifecycles(self) -> list[ModelLifecycle]:
        """The lifecycles of its local models."""
        return [g.lifecycle for g in self.groups.values() if g.lifecycle is not None]

    def waits_for_load(self, name: str, kind: str) -> bool:
        """Whether a request for ``name`` (a ``kind`` model) would wait for a load now."""
        groups = self._resolved.get(name)
        if not groups or groups[0].config.type != kind:
            return False
        if name in self.spill_after_s:  # it waits for a load only where it cannot spill
            return all(g.waits_for_load() for g in groups)
        return groups[0].waits_for_load()

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
