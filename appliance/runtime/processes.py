"""The worker processes of one server, as the main process finds them to signal them.

``serve`` makes a runtime folder and names it in :data:`RUNTIME_ENV` for the Granian
worker processes it spawns. Each worker process, once its app has started, registers
itself there: a file named by its PID that it holds locked while it lives. The main
process signals every PID whose file is still locked (see :mod:`appliance.runtime.signals`). A
file whose lock it can take belongs to a process that is gone (a crash leaves its file
behind, but never its lock): it is removed, and its PID, which the system may have
given to an unrelated process since, is never signalled.

Only public, portable POSIX calls: no knowledge of Granian's own bookkeeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

import structlog

RUNTIME_ENV = "APPLIANCE_RUNTIME_DIR"
_SUFFIX = ".pid"

log = structlog.get_logger("appliance.runtime")


def create_folder(port: int) -> Path:
    """A fresh runtime folder for the server on ``port``; remove it with :func:`remove_folder`."""
    return Path(tempfile.mkdtemp(prefix=f"appliance-run-{port}-"))


def remove_folder(folder: Path) -> None:
    """Remove a runtime folder and whatever registrations are left in it."""
    shutil.rmtree(folder, ignore_errors=True)


class Registration:
    """This process's entry in the runtime folder, held locked until :meth:`close`."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / f"{os.getpid()}{_SUFFIX}"
        # Locked under a temporary name, then renamed: the main process never sees an
        # unlocked file of a live process (it would take it for a dead one).
        staging = folder / f".{os.getpid()}.staging"
        self._fd = os.open(staging, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self._fd, str(os.getpid()).encode())
            os.replace(staging, self.path)
        except OSError:
            os.close(self._fd)
            raise

    def close(self) -> None:
        """Leave the folder: remove the file, then release the lock."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)


def register(folder: str | None = None) -> Registration | None:
    """Register this process in ``folder`` (default: :data:`RUNTIME_ENV`); None if unset.

    A server run in-process (tests) has no runtime folder and registers nothing.
    """
    folder = folder if folder is not None else os.environ.get(RUNTIME_ENV)
    if not folder:
        return None
    try:
        return Registration(Path(folder))
    except OSError as exc:
        log.error("runtime_register_failed", folder=folder, error=str(exc))
        return None


def live_pids(folder: Path) -> list[int]:
    """The PIDs registered in ``folder`` whose process still holds its lock.

    Files of processes that are gone are removed on the way.
    """
    pids: list[int] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return pids
    for entry in entries:
        if entry.suffix != _SUFFIX or not entry.stem.isdigit():
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue  # removed meanwhile: that process has left
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pids.append(int(entry.stem))  # locked: its process lives
        except OSError:
            continue
        else:
            with contextlib.suppress(OSError):
                entry.unlink()  # unlocked: left behind by a process that died
        finally:
            os.close(fd)
    return sorted(pids)


def signal_all(folder: Path, sig: int) -> list[int]:
    """Send ``sig`` to every live registered process; the PIDs signalled."""
    sent: list[int] = []
    for pid in live_pids(folder):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            sent.append(pid)
    return sent
