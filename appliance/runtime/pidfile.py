"""Files a running server holds locked for its life: its PID file, its address's lock.

The PID file holds the main process's PID and nothing else (what ``kill -HUP $(cat
FILE)`` and a service manager's ``PIDFile=`` expect). While the server runs it holds an
``flock`` on the file, and the lock, not the PID, says whether the file belongs to a live
server: a server that is gone (``kill -9``, power loss) leaves its file behind but never
its lock, and the PID it names may since have been given to an unrelated process. So
``appliance reload`` signals only a PID whose file is locked, and a new ``serve`` takes
over a file that nobody holds, whatever process its PID names now.

The lock is held through one open file, marked close-on-exec and closed in processes
forked from this one (Granian's worker processes), so that it ends with the main process.
Only portable POSIX calls.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


class PidFileError(Exception):
    """A PID file that cannot be claimed or signalled through; the message says why."""


class Held(Exception):
    """The file is held by a live process; ``content`` is what that process wrote in it."""

    def __init__(self, path: Path, content: str) -> None:
        super().__init__(f"{path} is held by a running process")
        self.path = path
        self.content = content


class HeldFile:
    """``path`` held locked by this process, with ``content`` in it, until :meth:`close`.

    Raises :class:`Held` while another live process holds it, ``OSError`` if the file
    cannot be written. A file left by a process that is gone is taken over.
    """

    def __init__(self, path: Path, content: str) -> None:
        self.path = path
        self._fd: int | None = _lock(path)
        try:
            os.ftruncate(self._fd, 0)
            os.write(self._fd, content.encode())
        except OSError:
            self.close()
            raise
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        """In a forked child: drop its copy of the open file, not the lock (which is the
        parent's: ``flock`` belongs to the open file, shared by both)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Remove the file (while still holding it), then release the lock."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


def _lock(path: Path) -> int:
    """An open, exclusively locked descriptor of ``path`` (created if missing)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _flock_exclusive(fd)
        except BlockingIOError:
            content = _read(fd)
            os.close(fd)
            raise Held(path, content) from None
        except OSError:
            os.close(fd)
            raise
        # Its previous holder may have removed it between our open and our lock: then
        # the lock is on a file nobody else can find, and a fresh one is locked instead.
        if _same_file(fd, path):
            return fd
        os.close(fd)


def _flock_exclusive(fd: int) -> None:
    """Lock ``fd``, or raise BlockingIOError if a live holder keeps it: :func:`running_pid`
    takes the lock for an instant to learn it is free, so a few tries a few milliseconds
    apart tell that from a holder."""
    for _ in range(_TRIES - 1):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            time.sleep(0.01)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


_TRIES = 5


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _read(fd: int) -> str:
    with contextlib.suppress(OSError):
        return os.pread(fd, 64, 0).decode(errors="replace").strip()
    return ""


def claim_pid_file(path: Path) -> HeldFile:
    """Write this process's PID to ``path`` and hold it (what ``appliance reload`` signals).

    Refused while another live server holds the file.
    """
    try:
        return HeldFile(path, str(os.getpid()))
    except Held as held:
        raise PidFileError(
            f"{path} is held by a running server (PID {held.content or 'unknown'})"
        ) from None
    except OSError as exc:
        raise PidFileError(f"cannot write the PID file {path}: {exc.strerror}") from None


def running_pid(path: Path) -> int:
    """The PID of the live server holding ``path``; :class:`PidFileError` if none does."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise PidFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False  # released as the file is closed below
        content = _read(fd)
    finally:
        os.close(fd)
    if not content.isdigit():
        raise PidFileError(f"{path} holds no PID")
    if not held:
        raise PidFileError(
            f"{path} names PID {content}, but no running server holds it (its server is "
            f"gone, and that PID may now be another program's): nothing signalled"
        )
    return int(content)
