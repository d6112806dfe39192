"""Admin commands that every worker process carries out, posted in the runtime folder.

With ``server.processes > 1`` each worker process has its own cluster, so an admin load or
unload received by one must reach the others, as SIGHUP does. The receiving process
writes the command into the runtime folder (:mod:`appliance.runtime.processes`),
addressed to the other live processes, and sends them :data:`ADMIN_SIGNAL`. Each reads
the commands addressed to it, carries them out on its own cluster and writes its answer
beside the command; the sender waits for every answer, at most a bound, and then removes
the command and its answers (:func:`withdraw`).

A command holds its id, the action, the name of a model the config declares, the sender
and the PIDs it is addressed to: no key and nothing else from the client. Files are
written under a temporary name and renamed, so a reader never sees one half-written; the
folder is the server's own (mode 0700) and goes with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from appliance.runtime.processes import RUNTIME_ENV, live_pids
from appliance.runtime.signals import ADMIN_SIGNAL

_BOX = "commands"
_COMMAND = ".command"
_ANSWER = ".answer"
_POLL_S = 0.05


@dataclass(frozen=True)
class Command:
    """One admin action for the processes in ``to``."""

    id: str
    action: str
    model: str
    sender: int
    to: tuple[int, ...]


def folder_from_environment() -> Path | None:
    """The runtime folder of this worker process; None when it serves alone."""
    folder = os.environ.get(RUNTIME_ENV)
    return Path(folder) if folder else None


def post(folder: Path, action: str, model: str) -> Command | None:
    """Address ``action`` on ``model`` to every other live process and signal them.

    Returns the command (to :func:`collect` its answers, then :func:`withdraw` it), or
    None when no other process is registered.
    """
    me = os.getpid()
    others = tuple(pid for pid in live_pids(folder) if pid != me)
    if not others:
        return None
    box = folder / _BOX
    box.mkdir(mode=0o700, exist_ok=True)
    _sweep(box)
    command = Command(uuid.uuid4().hex, action, model, me, others)
    _write(box / f"{command.id}{_COMMAND}", asdict(command))
    for pid in others:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, ADMIN_SIGNAL)
    return command


def pending(folder: Path, taken: set[str]) -> list[Command]:
    """The commands addressed to this process that are not in ``taken`` (which they are
    then added to); ids of commands withdrawn meanwhile leave ``taken``."""
    me = os.getpid()
    found: list[Command] = []
    present: set[str] = set()
    for path in _entries(folder / _BOX, _COMMAND):
        try:
            fields = orjson.loads(path.read_bytes())
            command = Command(**{**fields, "to": tuple(fields["to"])})
        except (OSError, ValueError, TypeError, KeyError):
            continue  # withdrawn while read, or not a command
        present.add(command.id)
        if me in command.to and command.id not in taken:
            taken.add(command.id)
            found.append(command)
    taken &= present
    return found


def answer(folder: Path, command: Command, body: dict[str, Any]) -> None:
    """This process's answer to ``command``; dropped if the sender stopped waiting."""
    box = folder / _BOX
    if (box / f"{command.id}{_COMMAND}").exists():
        _write(box / f"{command.id}.{os.getpid()}{_ANSWER}", body)


async def collect(
    folder: Path, command: Command, timeout_s: float
) -> dict[int, dict[str, Any] | str]:
    """Wait for every addressee's answer, at most ``timeout_s``.

    Returns each PID's answer, or for one without an answer why: ``"no_answer"`` (still
    running at the deadline) or ``"gone"`` (it ended, or left the folder, first).
    """
    box = folder / _BOX
    deadline = time.monotonic() + timeout_s
    got: dict[int, dict[str, Any] | str] = {}
    while True:
        for pid in command.to:
            if pid not in got:
                with contextlib.suppress(OSError, ValueError):
                    got[pid] = orjson.loads((box / f"{command.id}.{pid}{_ANSWER}").read_bytes())
        missing = [pid for pid in command.to if pid not in got]
        if not missing:
            return got
        live = set(live_pids(folder))
        for pid in missing:
            if pid not in live:
                got[pid] = "gone"
        if time.monotonic() >= deadline:
            return {**got, **{pid: "no_answer" for pid in command.to if pid not in got}}
        await asyncio.sleep(_POLL_S)


def withdraw(folder: Path, command: Command) -> None:
    """Remove ``command`` and its answers from the folder."""
    box = folder / _BOX
    with contextlib.suppress(OSError):
        (box / f"{command.id}{_COMMAND}").unlink()
    for pid in command.to:
        with contextlib.suppress(OSError):
            (box / f"{command.id}.{pid}{_ANSWER}").unlink()


def _sweep(box: Path) -> None:
    """Remove answers written after their sender stopped waiting."""
    live = {path.name.split(".", 1)[0] for path in _entries(box, _COMMAND)}
    for path in _entries(box, _ANSWER):
        if path.name.split(".", 1)[0] not in live:
            with contextlib.suppress(OSError):
                path.unlink()


def _entries(box: Path, suffix: str) -> list[Path]:
    try:
        return [p for p in box.iterdir() if p.name.endswith(suffix) and not p.name.startswith(".")]
    except OSError:
        return []


def _write(path: Path, body: dict[str, Any]) -> None:
    staging = path.with_name(f".{path.name}.staging")
    fd = os.open(staging, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, orjson.dumps(body))
    finally:
        os.close(fd)
    os.replace(staging, path)
