"""The model registry: public names (models and route aliases) to model groups.

A :class:`ModelGroup` is one declared model: its config, its workers and their
dispatcher. The registry resolves a name to the ordered groups that may answer it: one
for a model, the route's targets for an alias.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from appliance.config import ApplianceConfig, ModelConfig
from appliance.dispatch import Dispatcher
from appliance.errors import ModelNotFoundError
from appliance.health import HealthMonitor
from appliance.workers import Worker, build_workers


class ModelGroup:
    """One declared model and its running workers."""

    def __init__(self, config: ModelConfig, workers: list[Worker]) -> None:
        self.config = config
        self.workers = workers
        self.dispatcher = Dispatcher(
            config.name,
            workers,
            max_concurrency=config.max_concurrency,
            queue_size=config.queue_size,
            queue_timeout_s=config.queue_timeout_s,
        )
        self.health = HealthMonitor(workers, config.health, self.dispatcher.wake)
        for worker in workers:
            worker.on_ready = self.dispatcher.wake

    @classmethod
    def from_config(cls, config: ModelConfig) -> ModelGroup:
        """Build the group and its (unstarted) workers."""
        return cls(config, build_workers(config))

    @property
    def name(self) -> str:
        """The public model name."""
        return self.config.name

    @property
    def ready(self) -> bool:
        """Whether at least one worker can take requests."""
        return any(w.healthy for w in self.workers)

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
        groups = [ModelGroup.from_config(m) for m in config.models]
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
                f"The model `{name}` does not exist. "
                f"Available models: {', '.join(self.public_ids())}.",
                param="model",
            ) from None

    async def start(self) -> None:
        """Start every worker of every model."""
        await asyncio.gather(*(g.start() for g in self.groups.values()))

    async def close(self) -> None:
        """Stop every worker."""
        await asyncio.gather(*(g.close() for g in self.groups.values()))
