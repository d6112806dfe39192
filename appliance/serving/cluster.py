"""A cluster: everything one validated config brings to life.

The app holds a :class:`ClusterRef`; each request reads ``ref.current`` once and uses that
cluster throughout, so swapping the reference (a reload) never mixes two configs inside
one request. The :class:`Residency` of local models (their memory budget) is one per
process: each cluster a reload builds takes it over from the one before.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from appliance.accounting.auth import Authenticator
from appliance.config import ApplianceConfig
from appliance.local.residency import Residency
from appliance.runtime.timers import Timers
from appliance.serving.gateway import Gateway
from appliance.serving.registry import Registry
from appliance.serving.snapshots import ModelSnapshot

log = structlog.get_logger("appliance.cluster")


@dataclass(frozen=True)
class ClusterSnapshot:
    """Every model's state at one moment."""

    models: tuple[ModelSnapshot, ...]

    @property
    def ready(self) -> bool:
        """Whether the replica can serve: every required model has an available worker,
        or is a local model that can be loaded (``load: on_demand``, or unloaded idle).

        With no required model the replica is ready (it has started; any model that
        cannot serve answers 503 on its own).
        """
        return all(m.ready for m in self.models if m.required)


class Cluster:
    """Registry, workers, keys and gateway built from one config."""

    def __init__(
        self, config: ApplianceConfig, registry: Registry, residency: Residency | None = None
    ) -> None:
        self.config = config
        self.registry = registry
        self.residency = residency or Residency()
        self.auth = Authenticator(config.auth.api_keys)
        # The time limits of this cluster's requests (body, model call, sends, the watch
        # for a client that leaves), on one loop timer.
        self.timers = Timers()
        self.gateway = Gateway(registry, self.timers)
        self.active = 0

    def enter(self) -> None:
        """A request is now served by this cluster (see :meth:`leave`)."""
        self.active += 1

    async def leave(self) -> None:
        """That request's response is over; a retired cluster drains to zero."""
        self.active -= 1

    @classmethod
    def from_config(cls, config: ApplianceConfig) -> Cluster:
        """Build (but do not start) the cluster a config describes."""
        residency = Residency()
        return cls(config, Registry.from_config(config, residency), residency)

    def memory_budget_mb(self) -> float | None:
        """This process's share of ``local.memory_budget_mb``."""
        budget = self.config.local.memory_budget_mb
        return None if budget is None else budget / self.config.server.processes

    def take_residency(self) -> None:
        """Make this cluster's local models the ones the memory budget counts."""
        self.residency.adopt(self.registry.lifecycles(), self.memory_budget_mb())

    def snapshot(self) -> ClusterSnapshot:
        """Every model's state now (see :meth:`appliance.serving.registry.ModelGroup.snapshot`)."""
        return ClusterSnapshot(tuple(g.snapshot() for g in self.registry.groups.values()))

    async def start(self) -> None:
        """Start every worker; load the local models that load at start."""
        self.take_residency()
        self.residency.start()
        await self.registry.start()
        log.info(
            "cluster_started",
            models=[g.name for g in self.registry.groups.values()],
            workers=sum(len(g.workers) for g in self.registry.groups.values()),
            aliases=list(self.registry.routes),
            api_keys=self.auth.key_count,
        )

    async def close(self) -> None:
        """Stop every worker; drop its timers (a retired cluster's emptied buckets, kept
        until their time, would otherwise stay as long as its longest limit)."""
        await self.residency.stop()
        await self.registry.close()
        self.timers.close()


class ClusterRef:
    """The one mutable reference: which cluster serves new requests."""

    def __init__(self, cluster: Cluster) -> None:
        self.current = cluster
