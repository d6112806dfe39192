"""Which local models are resident: the memory budget, LRU eviction and idle unloads.

One :class:`Residency` per serving process outlives reloads (a reload hands it the new
cluster's models and budget), so a model carried over keeps its place and its memory.

- **Room.** Before a model loads, the footprints of the others (the peak RSS of their
  running workers, or the need of those still starting) plus the new model's need must
  fit ``local.memory_budget_mb`` (this process's share of it). If not, the least
  recently used idle models are unloaded first; if none is idle, the least recently
  used loaded one is drained and unloaded: the requests already waiting for it are
  served first, then those in flight finish (requests arriving later wait for its next
  load). So alternating requests swap models once per batch, not once per request. One
  load makes room at a time. A model that cannot fit even alone was refused by config
  validation.
- **Idle.** A model with ``idle_unload_s`` that served nothing for that long is unloaded.
- **Observers** (the metrics) hear of every load, failed load and unload.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

import structlog

from appliance.local.lifecycle import ModelLifecycle, State

log = structlog.get_logger("appliance.residency")

_WAIT_S = 0.05
_MAX_SWEEP_S = 1.0


class LifecycleObserver(Protocol):
    """Hears of loads and unloads (:class:`appliance.runtime.metrics.Metrics` is one)."""

    def model_loaded(self, model: str, seconds: float, *, ok: bool) -> None: ...

    def model_unloaded(self, model: str, reason: str) -> None: ...


class Residency:
    """The local models of the serving cluster and the memory they may use.

    Args:
        budget_mb: This process's memory budget for local models; None: no budget.
    """

    def __init__(self, budget_mb: float | None = None) -> None:
        self.budget_mb = budget_mb
        self.models: list[ModelLifecycle] = []
        self.observers: list[LifecycleObserver] = []
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._evictions: set[asyncio.Task[None]] = set()

    def adopt(self, models: Iterable[ModelLifecycle], budget_mb: float | None) -> None:
        """Serve these models under this budget from now on (start, reload)."""
        self.models = list(models)
        self.budget_mb = budget_mb

    def observe(self, observer: LifecycleObserver) -> None:
        """Tell ``observer`` of every load and unload."""
        self.observers.append(observer)

    def start(self) -> None:
        """Begin unloading idle models."""
        if self._sweeper is None:
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def stop(self) -> None:
        """Stop unloading idle models."""
        tasks = [*self._evictions, *([self._sweeper] if self._sweeper else [])]
        self._sweeper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def used_mb(self, besides: ModelLifecycle | None = None) -> float:
        """What the resident models count for now (all but ``besides``)."""
        return sum(m.footprint_mb() for m in self.models if m is not besides)

    async def make_room(self, model: ModelLifecycle, *, evict: bool = True) -> bool:
        """Wait until ``model`` fits the budget, unloading others as needed.

        Returns False only with ``evict=False`` (a preload) when it does not fit as is.
        """
        if self.budget_mb is None:
            return True
        async with self._lock:
            while True:
                need, used = model.need_mb(), self.used_mb(besides=model)
                others = [m for m in self.models if m is not model and m.admitted]
                if need + used <= self.budget_mb or not others:
                    return True
                if not evict:
                    return False
                victim = self._victim(others)
                if victim is None:  # the others are loading or unloading: wait for them
                    await asyncio.sleep(_WAIT_S)
                    continue
                served = 0 if victim.idle else await victim.serve_waiting()
                log.info(
                    "model_evicted",
                    model=victim.name,
                    for_model=model.name,
                    need_mb=round(need),
                    used_mb=round(used),
                    budget_mb=self.budget_mb,
                    served_waiting=served,
                )
                await victim.unload("memory_budget")

    def loaded(self, model: str, seconds: float, *, ok: bool) -> None:
        """A load finished (``ok``) or one attempt failed."""
        for observer in self.observers:
            observer.model_loaded(model, seconds, ok=ok)

    def unloaded(self, model: str, reason: str) -> None:
        """A model's workers were stopped."""
        for observer in self.observers:
            observer.model_unloaded(model, reason)

    @staticmethod
    def _victim(others: list[ModelLifecycle]) -> ModelLifecycle | None:
        """The least recently used idle model, else the least recently used loaded one."""
        idle = [m for m in others if m.idle]
        if idle:
            return min(idle, key=lambda m: m.last_used)
        loaded = [m for m in others if m.state is State.LOADED]
        return min(loaded, key=lambda m: m.last_used) if loaded else None

    async def _sweep(self) -> None:
        while True:
            timeouts = [m.config.idle_unload_s for m in self.models if m.config.idle_unload_s]
            await asyncio.sleep(min([_MAX_SWEEP_S, *(t / 4 for t in timeouts)]))
            now = time.monotonic()
            for model in self.models:
                limit = model.config.idle_unload_s
                if limit is not None and model.idle and now - model.last_used >= limit:
                    task = asyncio.ensure_future(model.unload("idle"))
                    self._evictions.add(task)
                    task.add_done_callback(self._evictions.discard)
