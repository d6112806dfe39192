"""Admin loads and unloads carried out in every worker process of the server.

With ``server.processes > 1`` each process has its own local models. The process that
receives ``POST /admin/load`` or ``/admin/unload`` acts on its own model and posts the
action to the others through the runtime folder (:mod:`appliance.runtime.commands`);
:class:`AdminRelay`, a component of each process, carries out what the others post. The
answer lists the model's state in every process: those that did not answer in time are
listed as such (``"answered": false``), never waited for without end. A server of one
process has no runtime folder and acts alone, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import structlog

from appliance.clip import clip
from appliance.errors import APIError, InvalidRequestError
from appliance.local.lifecycle import ModelLifecycle
from appliance.runtime import commands
from appliance.runtime.signals import ADMIN_SIGNAL
from appliance.serving.cluster import Cluster, ClusterRef

log = structlog.get_logger("appliance.admin")

ACTIONS = ("load", "unload")
_GRACE_S = 10.0  # past the model's own bound: a process's answer on its way
_MISSING = {
    "no_answer": "did not answer within {bound:g}s",
    "gone": "ended before it answered",
}


def lifecycle_of(cluster: Cluster, name: object) -> ModelLifecycle:
    """The local model called ``name`` in ``cluster``, or the client error saying why not."""
    if not isinstance(name, str) or not name:
        raise InvalidRequestError('Give the model to act on: {"model": "<name>"}.', param="model")
    group = cluster.registry.groups.get(name)
    if group is None:
        cluster.registry.resolve(name)  # an alias resolves; an unknown name raises 404
        raise InvalidRequestError(
            f"`{clip(name)}` is an alias; name one of its models.", param="model"
        )
    if group.lifecycle is None:
        raise InvalidRequestError(
            f"The model `{name}` is not a local model: it has nothing to load or unload.",
            param="model",
            code="model_not_local",
        )
    return group.lifecycle


async def everywhere(lifecycle: ModelLifecycle, action: str) -> list[dict[str, Any]]:
    """Carry out ``action`` here and in every other worker process; each one's state,
    this process's first.

    Raises:
        APIError: the action failed in this process (as with one process alone).
    """
    folder = commands.folder_from_environment()
    command = commands.post(folder, action, lifecycle.name) if folder is not None else None
    own = asyncio.ensure_future(_act(lifecycle, action))
    try:
        others = {}
        if folder is not None and command is not None:
            bound = bound_s(lifecycle, action)
            others = {
                pid: _missing(pid, why, bound) if isinstance(why, str) else why
                for pid, why in (await commands.collect(folder, command, bound)).items()
            }
        error = await own
    finally:
        own.cancel()  # only if this request was cancelled while it ran
        if folder is not None and command is not None:
            commands.withdraw(folder, command)
    if error is not None:
        raise error
    return [report(lifecycle), *(others[pid] for pid in sorted(others))]


def bound_s(lifecycle: ModelLifecycle, action: str) -> float:
    """How long the other processes' answers are waited for: a load within the model's
    ``startup_timeout_s``, an unload once requests had their ``timeout_s``, then a grace."""
    config = lifecycle.config
    return (config.startup_timeout_s if action == "load" else config.timeout_s) + _GRACE_S


def report(lifecycle: ModelLifecycle, error: APIError | None = None) -> dict[str, Any]:
    """This process's entry in the answer."""
    entry: dict[str, Any] = {"pid": os.getpid(), "answered": True, **lifecycle.describe()}
    if error is not None:
        entry["error"] = _error(error)
    return entry


async def carry_out(cluster: Cluster, action: str, name: str) -> dict[str, Any]:
    """A command another process posted, on this process's cluster; never raises."""
    try:
        lifecycle = lifecycle_of(cluster, name)
    except APIError as exc:  # this process serves another config (a reload on its way)
        return {"pid": os.getpid(), "answered": True, "state": None, "error": _error(exc)}
    return report(lifecycle, await _act(lifecycle, action))


async def _act(lifecycle: ModelLifecycle, action: str) -> APIError | None:
    try:
        if action == "load":
            await lifecycle.load(lifecycle.config.startup_timeout_s)
        else:
            await lifecycle.unload("admin")
    except APIError as exc:
        return exc
    return None


def _error(exc: APIError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}


def _missing(pid: int, why: str, bound: float) -> dict[str, Any]:
    message = f"process {pid} {_MISSING[why].format(bound=bound)}"
    error = {"code": why, "message": message}
    return {"pid": pid, "answered": False, "state": None, "error": error}


class AdminRelay:
    """Carries out in this process the admin actions that other processes post: on
    :data:`ADMIN_SIGNAL` it reads the runtime folder. Installed before this process
    registers there, so no signal finds it unready."""

    def __init__(self, ref: ClusterRef) -> None:
        self.ref = ref
        self.folder: Path | None = None
        self._taken: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.folder = commands.folder_from_environment()
        if self.folder is None:
            return
        # Only the main thread of a process may handle signals (not so in some tests).
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(ADMIN_SIGNAL, self.wake)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def wake(self) -> None:
        """Take up every command addressed to this process that it has not yet taken."""
        if self.folder is None:
            return
        for command in commands.pending(self.folder, self._taken):
            task = asyncio.ensure_future(self._serve(self.folder, command))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, folder: Path, command: commands.Command) -> None:
        if command.action not in ACTIONS:
            return
        log.info("admin_relayed", action=command.action, model=command.model, sender=command.sender)
        try:
            body = await carry_out(self.ref.current, command.action, command.model)
        except Exception as exc:
            log.exception("admin_relay_failed", action=command.action, model=command.model)
            failure = {"code": "internal_error", "message": type(exc).__name__}
            body = {"pid": os.getpid(), "answered": True, "state": None, "error": failure}
        commands.answer(folder, command, body)
