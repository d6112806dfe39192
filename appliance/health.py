"""Worker health: active probes that never cost a model call, and passive ejection.

Each model group runs one probe loop. A worker whose probe fails, or that fails
``failures`` requests in a row (connect errors, upstream 5xx, timeouts; not 429s), is
taken out of rotation. A successful probe brings it back at once. With probes off
(``interval_s: 0``) it comes back on its own after a cool-down that doubles with each
ejection in a row (up to ``max_cooldown_s``), and one success resets the back-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from appliance.config.backends import HealthConfig
from appliance.errors import APIError
from appliance.workers import Worker

log = structlog.get_logger("appliance.health")


class _State:
    __slots__ = ("cooldown", "failures")

    def __init__(self, cooldown: float) -> None:
        self.failures = 0
        self.cooldown = cooldown


class HealthMonitor:
    """Health of the workers of one model.

    Args:
        workers: The group's workers.
        config: The model's ``health`` section.
        on_change: Called after a worker comes back (the dispatcher re-checks waiters).
    """

    def __init__(
        self, workers: Sequence[Worker], config: HealthConfig, on_change: Callable[[], None]
    ) -> None:
        self.workers = list(workers)
        self.config = config
        self.on_change = on_change
        self._states = {id(w): _State(config.cooldown_s) for w in self.workers}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin probing (if enabled)."""
        if self.config.interval_s > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._probe_loop())

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def success(self, worker: Worker) -> None:
        """A request succeeded on ``worker``."""
        state = self._states[id(worker)]
        state.failures = 0
        state.cooldown = self.config.cooldown_s

    def failure(self, worker: Worker) -> None:
        """A request failed on ``worker`` in a way another worker might not."""
        state = self._states[id(worker)]
        state.failures += 1
        if worker.healthy and state.failures >= self.config.failures:
            self._eject(worker, state, f"{state.failures} failures in a row")

    def _eject(self, worker: Worker, state: _State, why: str) -> None:
        worker.healthy = False
        log.warning("worker_ejected", worker=worker.worker_id, why=why, cooldown_s=state.cooldown)
        if self.config.interval_s <= 0:
            asyncio.get_running_loop().call_later(
                state.cooldown, self._readmit, worker, "cool-down over"
            )
        state.cooldown = min(state.cooldown * 2, self.config.max_cooldown_s)

    def _readmit(self, worker: Worker, why: str) -> None:
        if worker.healthy or worker.closed:
            return
        state = self._states[id(worker)]
        state.failures = 0
        worker.healthy = True
        log.info("worker_readmitted", worker=worker.worker_id, why=why)
        self.on_change()

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                await asyncio.gather(*(self._probe(w) for w in self.workers))
            except Exception:  # a bug in a probe must not end health checking for good
                log.exception("probe_loop_error")

    async def _probe(self, worker: Worker) -> None:
        if worker.closed:
            return
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await worker.probe()
        except (APIError, TimeoutError) as exc:
            if worker.healthy:
                self._eject(worker, self._states[id(worker)], f"probe failed: {exc!r}")
            return
        if not worker.healthy:
            self._readmit(worker, "probe succeeded")
