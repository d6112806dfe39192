"""Making sure the address ``serve`` is given is its own before Granian listens on it.

Granian listens with ``SO_REUSEPORT`` (each of its processes has its own socket on the
one port), so a second server on a port already served (by another appliance, or by
anything else of the same user that uses the option) would start without a word and get
a share of the connections. Before Granian starts, ``serve``:

- holds a lock file named by the address and user (:func:`lock_path`) for its life: a second
  appliance on the same address is refused, however close together the two start, and
  is told the first one's PID;
- binds a plain socket to the address and closes it (:func:`probe`): without
  ``SO_REUSEPORT`` the bind fails while anyone listens there (a server on ``0.0.0.0``
  too), and with ``SO_REUSEADDR`` the connections of a server just stopped (TIME_WAIT)
  do not stand in the way of its restart.

What remains: between the probe and Granian's own bind (a fraction of a second with one
process, up to a worker's start-up with several) a process of the same user that starts
listening there with ``SO_REUSEPORT`` would still share the port: a program other than the
appliance, or an appliance whose lock file differs (another spelling of the address, such
as ``0.0.0.0`` against ``127.0.0.1``, or another temporary folder). One that listens
without the option makes Granian's bind fail, which ``serve`` reports in one line like the
probe's.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import tempfile
from pathlib import Path

from appliance.runtime.pidfile import Held, HeldFile


class AddressError(Exception):
    """The address cannot be served; the message, one line, says which and why."""


def shown(host: str, port: int) -> str:
    """``host:port`` as written in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def lock_path(host: str, port: int) -> Path:
    """The lock file of one address for this user (in the temporary folder, like the PID
    file). Only processes of one user can share a port through ``SO_REUSEPORT``, so only
    they need to see each other's lock; and a file another user's server left behind (a
    ``kill -9``) in a shared ``/tmp``, which this user may not open, refuses no one."""
    name = f"appliance-{os.getuid()}-{host.replace(':', '_')}-{port}.lock"
    return Path(tempfile.gettempdir()) / name


def claim(host: str, port: int) -> HeldFile:
    """Hold ``host:port`` for this server; :class:`AddressError` if it is taken."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"cannot listen on {host}:{port}: the host must be an IP address such as "
            f"127.0.0.1, 0.0.0.0 or ::, not a name"
        ) from None
    try:
        path = lock_path(host, port)
    except OSError as exc:  # no temporary folder can be written (a read-only root)
        raise AddressError(
            f"cannot hold {shown(host, port)}: {exc.strerror}; set TMPDIR to a writable "
            f"folder for its lock file"
        ) from None
    try:
        held = HeldFile(path, str(os.getpid()))
    except Held as other:
        raise AddressError(
            f"{shown(host, port)} is already in use by the appliance server with PID "
            f"{other.content or 'unknown'}"
        ) from None
    except OSError as exc:
        raise AddressError(f"cannot write {path}: {exc.strerror}") from None
    try:
        probe(host, port)
    except AddressError:
        held.close()
        raise
    return held


def probe(host: str, port: int) -> None:
    """Bind a plain socket to ``host:port`` and let it go; :class:`AddressError` if the
    bind fails (in use, or an address or port this process may not have)."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICHOST
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(where)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise AddressError(f"cannot listen on {shown(host, port)}: {exc.strerror}") from None
        holder = listener(port)
        by = f" by PID {holder}" if holder else ""
        raise AddressError(f"{shown(host, port)} is already in use{by}") from None


def listener(port: int) -> str | None:
    """Which process listens on TCP ``port`` (``"PID: command line"``), where Linux's
    ``/proc`` says and this user may see; else None."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            listening = len(fields) > 9 and fields[3] == "0A"
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in sorted(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()):
        if _holds(pid, inodes):
            return f"{pid}: {_command(pid)}"
    return None


def _holds(pid: int, sockets: set[str]) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") in sockets:
                return True
        except OSError:
            continue
    return False


def _command(pid: int) -> str:
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    line = " ".join(w.decode(errors="replace") for w in words if w)
    return line if len(line) <= 120 else f"{line[:117]}..."
