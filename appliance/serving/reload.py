"""Hot reload: replace the cluster, never mutate it.

A reload reads and validates the config, builds the next cluster beside the current one
(carrying over every model whose declaration did not change, workers and all), starts
what is new, swaps the one reference, and drains what was retired: requests already on
old workers finish there, new requests go to the new cluster. Anything wrong (YAML,
schema, a missing variable, a backend that fails to start) leaves the current cluster
serving and says why in the log.

Triggers: a change of the config file (watched with watchfiles, debounced, ignored when
the content is unchanged), SIGHUP in this process, or a direct call.

Server settings the reloader itself uses follow the serving config: a reload's drain
takes the new ``server.drain_timeout_s``, and ``server.watch_config`` turned off stops
the watcher (on starts it). Settings read once at start (``server.host``, ``port``,
``processes``, ``tls``, ``auth.window_s``, ``state.*``, and a ``drain_timeout_s`` above
the start value, which bounds shutdown) are logged as ``restart_needed`` while they differ
from the values this process started with, with the reload's ``reason``; so is a TLS
certificate, key or CA file whose content was replaced since the start (Granian keeps
serving what it read then). While the config is watched, so are the TLS files: replacing
one says ``restart_needed`` at once (``reason: tls_files_changed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import structlog

from appliance.config import ApplianceConfig
from appliance.config.tls import file_digests
from appliance.errors import ConfigError
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.registry import ModelGroup
from appliance.serving.reload_plan import (
    ReloadOutcome,
    plan_next,
    read_at_start,
    startup_budget,
    tls_files_replaced,
)

log = structlog.get_logger("appliance.reload")

Loader = Callable[[], ApplianceConfig]


class Reloader:
    """Watches the config and swaps in new clusters.

    Args:
        ref: The reference the app serves from.
        load: Reads and validates the config (raises :class:`ConfigError`).
        watch: The config file, watched while the serving config's
            ``server.watch_config`` is on; ``None``: never watched.
        apply_logging: Called with the new config after a swap (reconfigures logging).
        settle: Called once a reload is done and what it retired is closed (the serving
            process's :func:`appliance.runtime.heap.settle`).
        debounce_ms: Quiet time after a file event before reloading.
    """

    def __init__(
        self,
        ref: ClusterRef,
        load: Loader,
        *,
        watch: Path | None = None,
        apply_logging: Callable[[ApplianceConfig], None] | None = None,
        settle: Callable[[str], None] | None = None,
        debounce_ms: int = 200,
    ) -> None:
        self.settle = settle
        self.ref = ref
        self.load = load
        self.watch = watch
        self.apply_logging = apply_logging
        self.debounce_ms = debounce_ms
        self.reloads = 0
        self.last_reload: float | None = None
        self.observers: list[Callable[[ReloadOutcome], None]] = []
        self._initial = ref.current.config
        self._tls_files = file_digests(self._initial.server.tls)  # what Granian read
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[object]] = set()
        self._watching: asyncio.Event | None = None  # set it to stop that watcher
        self._digest = _digest(watch) if watch else None

    @property
    def watching(self) -> bool:
        """Whether a change of the file triggers a reload now."""
        return self._watching is not None

    async def start(self) -> None:
        """Begin watching the file (if the config says so) and listening for SIGHUP."""
        self._follow_watch_setting()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.request, "sighup")

    async def stop(self) -> None:
        """Stop watching; wait for drains in progress to end."""
        if self._watching is not None:
            self._watching.set()
            self._watching = None
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            # Removing the handler restores the default action, which ends the process:
            # a reload asked for while it shuts down must not.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def request(self, reason: str) -> None:
        """Ask for a reload soon (from a signal handler or a watcher)."""
        self._spawn(self.reload(reason))

    async def reload(self, reason: str) -> ReloadOutcome:
        """Reload now; reloads never overlap."""
        async with self._lock:
            outcome = await self._reload(reason)
        for observer in self.observers:
            observer(outcome)
        return outcome

    async def _reload(self, reason: str) -> ReloadOutcome:
        started = time.perf_counter()
        current = self.ref.current
        if self.watch is not None:
            self._digest = _digest(self.watch)
        try:
            config = self.load()
        except ConfigError as exc:
            return self._failed(reason, started, "invalid configuration", exc.problems)
        plan = plan_next(current, config)
        try:
            await asyncio.gather(*(g.start() for g in plan.fresh))
            async with asyncio.timeout(startup_budget(plan.fresh)):
                await asyncio.gather(*(g.wait_ready() for g in plan.fresh))
        except TimeoutError:
            await asyncio.gather(*(g.close() for g in plan.fresh), return_exceptions=True)
            return self._failed(
                reason,
                started,
                "new workers did not become ready in time",
                [g.name for g in plan.fresh],
            )
        except Exception as exc:  # a backend's start failure: never let it take us down
            await asyncio.gather(*(g.close() for g in plan.fresh), return_exceptions=True)
            return self._failed(
                reason, started, "a worker failed to start", [f"{type(exc).__name__}: {exc}"]
            )
        self.ref.current = plan.cluster
        plan.cluster.take_residency()
        if self.apply_logging is not None:
            self.apply_logging(config)
        self.reloads += 1
        self.last_reload = time.time()
        if plan.retired:
            self._spawn(self._drain(current, plan.retired, config.server.drain_timeout_s))
        else:
            self._settle_soon()
        self._follow_watch_setting()
        outcome = plan.outcome(reason)
        log.info(
            "config_reloaded",
            reason=reason,
            added=outcome.added,
            removed=outcome.removed,
            changed=outcome.changed,
            carried=outcome.carried,
            routes=len(config.routes),
            api_keys=len(config.auth.api_keys),
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        moved = read_at_start(self._initial, config)
        moved += tls_files_replaced(self._initial, config, self._tls_files)
        if moved:
            log.warning("restart_needed", settings=moved, reason=reason)
        return outcome

    def _failed(self, reason: str, started: float, what: str, problems: list[str]) -> ReloadOutcome:
        log.error(
            "config_reload_failed",
            reason=reason,
            error=what,
            problems=problems,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return ReloadOutcome(ok=False, reason=reason, error=f"{what}: {'; '.join(problems)}")

    async def _drain(self, old: Cluster, groups: list[ModelGroup], timeout_s: float) -> None:
        """Close retired groups once nothing can reach them any more (or after ``timeout_s``).

        Requests pinned to the old cluster that have not yet taken a worker count too:
        they may still pick one of these groups.
        """
        deadline = time.monotonic() + timeout_s
        try:
            # Polling a rare drain beats signalling an event on every request's path.
            while time.monotonic() < deadline:
                if not old.active and not any(g.in_flight() for g in groups):
                    break
                await asyncio.sleep(0.05)
            busy = [w.worker_id for g in groups for w in g.snapshot().workers if w.in_flight]
            if busy or old.active:
                log.warning("drain_timeout", workers=busy, timeout_s=timeout_s)
        finally:
            await asyncio.gather(*(g.close() for g in groups), return_exceptions=True)
            log.info("workers_retired", models=[g.name for g in groups])
            self._settle_soon()

    def _settle_soon(self) -> None:
        """Settle the heap once the caller's frame (which holds the old cluster) is gone."""
        if self.settle is not None:
            asyncio.get_running_loop().call_soon(self.settle, "reload")

    def _follow_watch_setting(self) -> None:
        """Start or stop the watcher as the serving config's ``server.watch_config`` says."""
        wanted = self.watch is not None and self.ref.current.config.server.watch_config
        if wanted and self._watching is None and self.watch is not None:
            self._watching = asyncio.Event()
            self._spawn(self._watch(self.watch, self._watching))
            if self._initial.server.tls is not None:
                self._spawn(self._watch_tls(self._watching))
            log.info("config_watch_started", file=str(self.watch))
        elif not wanted and self._watching is not None:
            self._watching.set()
            self._watching = None
            log.info("config_watch_stopped", file=str(self.watch))

    async def _watch(self, path: Path, stop: asyncio.Event) -> None:
        async for _ in _changes([path], self.debounce_ms, stop):
            digest = _digest(path)
            if digest == self._digest:
                continue
            await self.reload("file_changed")

    async def _watch_tls(self, stop: asyncio.Event) -> None:
        """Say ``restart_needed`` as soon as a TLS file Granian read at start is replaced
        (a renewal by certbot or cert-manager): it serves the old one until a restart."""
        tls = self._initial.server.tls
        assert tls is not None
        paths = [p.absolute() for p in (tls.cert_file, tls.key_file, tls.ca_file) if p]
        said: list[str] = []
        async for _ in _changes(paths, self.debounce_ms, stop):
            replaced = tls_files_replaced(self._initial, self._initial, self._tls_files)
            if replaced and replaced != said:
                log.warning("restart_needed", settings=replaced, reason="tls_files_changed")
            said = replaced

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _changes(paths: list[Path], debounce_ms: int, stop: asyncio.Event) -> AsyncIterator[None]:
    """Once per debounced burst of changes to ``paths``, until ``stop`` is set.

    Watches their folders: editors replace a file by renaming a temporary one over it. Not
    the subfolders: a file in a big folder (/tmp, a home) would have the watcher walk and
    watch the whole tree, on the event loop, before the first request.
    """
    import watchfiles

    names = set().union(*(_watched_names(p) for p in paths))
    async for changes in watchfiles.awatch(
        *{p.parent for p in paths},
        recursive=False,
        debounce=debounce_ms,
        step=50,
        stop_event=stop,
        watch_filter=lambda _change, name: Path(name).name in names,
    ):
        if stop.is_set():
            return
        if changes:
            yield


def _watched_names(path: Path) -> set[str]:
    """The names in the config's folder whose change may change the config: its own, and
    the first step of its symlink if that stays in the folder. A Kubernetes ConfigMap
    mounts ``cluster.yaml -> ..data/cluster.yaml`` and updates by renaming a new symlink
    over ``..data``: the file's own entry never changes."""
    names = {path.name}
    try:
        target = Path(os.readlink(path))
    except OSError:  # not a symlink (or gone): its own name is enough
        return names
    if not target.is_absolute() and target.parts and target.parts[0] not in (".", ".."):
        names.add(target.parts[0])
    return names


def _digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
