"""Worker health: active probes that never cost a model call, and passive ejection.

The monitor owns one piece of state per worker: whether it is **ejected**. A worker whose
probe fails (refused, an error status) is ejected, as is one that fails ``failures``
requests in a row (connect errors, upstream 5xx, timeouts; not 429s), or whose probe
times out ``failures`` times in a row: one slow probe on a loaded machine does not take
a worker that serves out of rotation (nor the last one), several in a row do. A
successful probe readmits a worker at once. With probes off (``interval_s: 0``) it is
readmitted on its own after a cool-down that doubles with each ejection in a row (up to
``max_cooldown_s``), and one success resets the back-off.

A worker is available when it is up (the worker's own state) and not ejected.
Readmission only lifts the ejection: it never makes a worker that is down available, and
a worker coming back up (a restarted child) stays ejected until a probe, run at once,
succeeds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from appliance.backends.base import Worker
from appliance.config.model import HealthConfig
from appliance.errors import APIError

log = structlog.get_logger("appliance.health")


class _State:
    __slots__ = ("cooldown", "ejected", "failures", "slow_probes", "timer")

    def __init__(self, cooldown: float) -> None:
        self.failures = 0
        self.slow_probes = 0  # probes timed out in a row
        self.cooldown = cooldown
        self.ejected = False
        self.timer: asyncio.TimerHandle | None = None


class HealthMonitor:
    """Ejection and readmission of the workers of one model.

    Args:
        workers: The group's workers.
        config: The model's ``health`` section.
        on_readmit: Called after a worker is readmitted (the dispatcher re-checks waiters).
    """

    def __init__(
        self, workers: Sequence[Worker], config: HealthConfig, on_readmit: Callable[[], None]
    ) -> None:
        self.config = config
        self.on_readmit = on_readmit
        self._states = {w: _State(config.cooldown_s) for w in workers}
        self._task: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()
        for worker in workers:
            worker.watch(self._worker_changed)

    def start(self) -> None:
        """Begin probing (if enabled)."""
        if self.config.interval_s > 0 and self._task is None:
            self._task = asyncio.ensure_future(self._probe_loop())

    async def stop(self) -> None:
        """Stop probing and cool-down timers."""
        tasks = [*self._probes, *([self._task] if self._task is not None else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for state in self._states.values():
            if state.timer is not None:
                state.timer.cancel()
                state.timer = None

    def ejected(self, worker: Worker) -> bool:
        """Whether ``worker`` is out of rotation."""
        return self._states[worker].ejected

    def available(self, worker: Worker) -> bool:
        """Whether ``worker`` may take requests: up and not ejected."""
        return worker.up and not self._states[worker].ejected

    def success(self, worker: Worker) -> None:
        """A request succeeded on ``worker``."""
        state = self._states[worker]
        state.failures = 0
        state.cooldown = self.config.cooldown_s

    def failure(self, worker: Worker) -> None:
        """A request failed on ``worker`` in a way another worker might not."""
        state = self._states[worker]
        state.failures += 1
        if not state.ejected and state.failures >= self.config.failures:
            self._eject(worker, state, f"{state.failures} failures in a row")

    def _eject(self, worker: Worker, state: _State, why: str) -> None:
        state.ejected = True
        log.warning("worker_ejected", worker=worker.worker_id, why=why, cooldown_s=state.cooldown)
        if self.config.interval_s <= 0:
            state.timer = asyncio.get_running_loop().call_later(
                state.cooldown, self._readmit, worker, "cool-down over"
            )
        state.cooldown = min(state.cooldown * 2, self.config.max_cooldown_s)

    def _readmit(self, worker: Worker, why: str) -> None:
        state = self._states[worker]
        state.timer = None
        if not state.ejected or worker.closed:
            return
        state.failures = 0
        state.ejected = False
        log.info("worker_readmitted", worker=worker.worker_id, why=why, up=worker.up)
        self.on_readmit()

    def _worker_changed(self, worker: Worker) -> None:
        """A worker came up or went down: an ejected one that came up is probed now."""
        if worker.up and self._states[worker].ejected and self._task is not None:
            task = asyncio.ensure_future(self._probe(worker))
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.interval_s)
            try:
                await asyncio.gather(*(self._probe(w) for w in self._states))
            except Exception:  # a bug in a probe must not end health checking for good
                log.exception("probe_loop_error")

    async def _probe(self, worker: Worker) -> None:
        if not worker.up:
            return  # it cannot take requests anyway; it says when it is back
        state = self._states[worker]
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await worker.probe()
        except APIError as exc:
            if not state.ejected:
                cause = f" ({exc.__cause__})" if exc.__cause__ else ""  # the address, say
                self._eject(worker, state, f"probe failed: {exc!r}{cause}")
            return
        except TimeoutError:
            state.slow_probes += 1
            if not state.ejected and state.slow_probes >= self.config.failures:
                why = f"{state.slow_probes} probes in a row timed out"
                self._eject(worker, state, why)
            return
        state.slow_probes = 0
        if state.ejected:
            self._readmit(worker, "probe succeeded")
