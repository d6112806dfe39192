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

The budget is a policy: it asks each model (a :class:`Resident`, which
:class:`appliance.local.lifecycle.ModelLifecycle` is) what it holds and needs, and asks
it to unload; the model's state is the model's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

import structlog

log = structlog.get_logger("appliance.residency")

_WAIT_S = 0.05
_AGAIN, _HOLD, _OUTSIDE = "again", "hold", "outside"  # how make_room asks again
_MAX_SWEEP_S = 1.0


class Resident(Protocol):
    """What the budget asks of a local model."""

    @property
    def name(self) -> str: ...

    @property
    def admitted(self) -> bool: ...  # holds its share of the budget

    @property
    def idle(self) -> bool: ...  # holds memory, serves nothing, awaited by nobody

    @property
    def admits(self) -> bool: ...  # loaded and taking requests

    @property
    def idle_unload_s(self) -> float | None: ...

    @property
    def last_used(self) -> float: ...

    def need_mb(self) -> float: ...

    def footprint_mb(self) -> float: ...

    async def serve_waiting(self) -> int: ...

    async def unload(self, reason: str) -> None: ...


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
        self.models: list[Resident] = []
        self.retiring: list[Resident] = []  # a reload retired them; they count until gone
        self.observers: list[LifecycleObserver] = []
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._evictions: set[asyncio.Task[None]] = set()

    def adopt(self, models: Iterable[Resident], budget_mb: float | None) -> None:
        """Serve these models under this budget from now on (start, reload); those no
        longer among them count until they have left the budget."""
        models = list(models)
        left = [m for m in self.models if not any(m is n for n in models)]
        self.retiring = [m for m in [*self.retiring, *left] if m.admitted]
        self.models = models
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

    def used_mb(self, besides: Resident | None = None) -> float:
        """What the resident and retiring models count for now (all but ``besides``)."""
        self.retiring = [m for m in self.retiring if m.admitted]
        return sum(m.footprint_mb() for m in [*self.models, *self.retiring] if m is not besides)

    async def make_room(self, model: Resident, *, evict: bool = True) -> bool:
        """Wait until ``model`` fits the budget, unloading others as needed.

        Returns False only with ``evict=False`` (a preload) when it does not fit even
        once the models a reload retired are gone.
        """
        if self.budget_mb is None:
            return True
        while True:
            async with self._lock:  # one load makes room at a time
                verdict = await self._room_for(model, evict)
                while verdict in (_AGAIN, _HOLD):  # evicted one, or others load or unload
                    if verdict is _HOLD:
                        await asyncio.sleep(_WAIT_S)
                    verdict = await self._room_for(model, evict)
            if isinstance(verdict, bool):
                return verdict
            await asyncio.sleep(_WAIT_S)  # for a swap or a drain: others may load meanwhile

    async def _room_for(self, model: Resident, evict: bool) -> bool | str:
        """True: it fits; False: it does not and may not evict; else ask again: at once
        (:data:`_AGAIN`, it evicted one), soon (:data:`_HOLD`), or after letting other
        loads make room meanwhile (:data:`_OUTSIDE`)."""
        assert self.budget_mb is not None
        need, used = model.need_mb(), self.used_mb(besides=model)
        if need + used <= self.budget_mb:
            return True
        others = [m for m in self.models if m is not model and m.admitted]
        retiring = sum(m.footprint_mb() for m in self.retiring if m is not model)
        if not others and not retiring:
            return True  # it cannot fit alone: config validation said so
        pending = not any(m is model for m in self.models)  # a reload's, before its swap
        if not evict:
            fits_after = need + used - retiring <= self.budget_mb
            return _OUTSIDE if pending or (retiring and fits_after) else False
        if retiring and need + used - retiring <= self.budget_mb:
            return _OUTSIDE  # it fits once the retired models are gone
        victim = self._victim(others)
        if victim is None:  # the others are loading or unloading: wait for them
            return _HOLD
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
        return _AGAIN

    def loaded(self, model: str, seconds: float, *, ok: bool) -> None:
        """A load finished (``ok``) or one attempt failed."""
        for observer in self.observers:
            observer.model_loaded(model, seconds, ok=ok)

    def unloaded(self, model: str, reason: str) -> None:
        """A model's workers were stopped."""
        for observer in self.observers:
            observer.model_unloaded(model, reason)

    @staticmethod
    def _victim(others: list[Resident]) -> Resident | None:
        """The least recently used idle model, else the least recently used loaded one."""
        idle = [m for m in others if m.idle]
        if idle:
            return min(idle, key=lambda m: m.last_used)
        loaded = [m for m in others if m.admits]
        return min(loaded, key=lambda m: m.last_used) if loaded else None

    async def _sweep(self) -> None:
        while True:
            timeouts = [m.idle_unload_s for m in self.models if m.idle_unload_s]
            await asyncio.sleep(min([_MAX_SWEEP_S, *(t / 4 for t in timeouts)]))
            now = time.monotonic()
            for model in self.models:
                limit = model.idle_unload_s
                if limit is not None and model.idle and now - model.last_used >= limit:
                    task = asyncio.ensure_future(model.unload("idle"))
                    self._evictions.add(task)
                    task.add_done_callback(self._evictions.discard)
