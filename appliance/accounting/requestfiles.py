"""The request log's files: one SQLite file per UTC day, ``requests-YYYY-MM-DD.sqlite``.

A day per file makes retention a matter of deleting files (no ``DELETE`` that leaves the
old prompts in free pages), and keeps each file small. The files are in WAL mode: the
admin API reads them (read-only) while the writer appends. Several processes of one
server write to the same files; SQLite's locking serialises them. The folder is created
0700 and the files 0600 (their ``-wal`` and ``-shm`` too): they hold prompts and replies.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from appliance.accounting.budgets import day_of
from appliance.accounting.places import place_problem

log = structlog.get_logger("appliance.requestlog")

PREFIX, SUFFIX = "requests-", ".sqlite"
_DAY_FILE = re.compile(r"^requests-(\d{4}-\d{2}-\d{2})\.sqlite$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id TEXT NOT NULL,
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    served_by TEXT,
    route TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    trace_id TEXT,
    stream INTEGER NOT NULL,
    request TEXT,
    reply TEXT,
    truncated INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE INDEX IF NOT EXISTS requests_id ON requests (id);
"""


class Summary(NamedTuple):
    """What the log lists of a captured request: all but its bodies (they are in ``Entry``)."""

    id: str
    ts: float
    key: str
    model: str  # as the client named it
    served_by: str | None  # the model that answered (an alias's target); None: none did
    route: str
    status: int
    latency_ms: float
    input_tokens: int
    output_tokens: int
    trace_id: str | None
    stream: bool


SUMMARY = Summary._fields
_INSERT = (
    f"INSERT INTO requests ({', '.join(SUMMARY)}, request, reply, truncated) "
    f"VALUES ({', '.join('?' * (len(SUMMARY) + 3))})"
)


class Entry(NamedTuple):
    """One captured request as written: the summary, then prompt and reply as JSON text."""

    summary: Summary
    request: str | None
    reply: str | None
    truncated: bool  # the prompt or the reply was cut at capture.max_body_bytes

    def row(self) -> tuple[Any, ...]:
        """The values of an ``INSERT``, in the table's order."""
        return (*self.summary, self.request, self.reply, self.truncated)


def day_file(folder: Path, day: str) -> Path:
    return folder / f"{PREFIX}{day}{SUFFIX}"


def day_files(folder: Path) -> list[tuple[str, Path]]:
    """The folder's day files, ``(day, path)``, newest first."""
    try:
        names = [
            (m.group(1), folder / m.group(0))
            for p in folder.iterdir()
            if (m := _DAY_FILE.match(p.name))
        ]
    except FileNotFoundError:
        return []
    return sorted(names, reverse=True)


def folder_problem(folder: Path) -> str | None:
    """Why the log cannot be kept in ``folder`` (None: it can); creates nothing, so that
    ``appliance check`` and ``serve`` say so before anything starts."""
    return place_problem(folder, _folder_problem)


def _folder_problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return f"{folder} is not a folder"
    return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder} cannot be written"


class DayFiles:
    """Writes entries to the file of their day; used from one thread (the writer's)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._open: dict[str, sqlite3.Connection] = {}

    def write(self, entries: list[Entry]) -> None:
        """Append ``entries``, one transaction per day file."""
        by_day: dict[str, list[Entry]] = {}
        for entry in entries:
            by_day.setdefault(day_of(entry.summary.ts), []).append(entry)
        for day, rows in by_day.items():
            conn = self._connection(day)
            with conn:
                conn.executemany(_INSERT, [entry.row() for entry in rows])

    def _connection(self, day: str) -> sqlite3.Connection:
        conn = self._open.get(day)
        if conn is None:
            path = day_file(self.folder, day)
            _private(path)
            conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            for old in sorted(self._open)[:-1]:  # today's and yesterday's stay open
                self._open.pop(old).close()
            self._open[day] = conn
        return conn

    def expire(self, now: float, retention_days: int) -> list[Path]:
        """Delete the files of days older than ``retention_days`` before ``now``'s day."""
        cutoff = (
            dt.date.fromisoformat(day_of(now)) - dt.timedelta(days=retention_days)
        ).isoformat()
        deleted = []
        for day, path in day_files(self.folder):
            if day >= cutoff:
                continue
            conn = self._open.pop(day, None)
            if conn is not None:
                conn.close()
            for each in (
                path,
                path.with_name(path.name + "-wal"),
                path.with_name(path.name + "-shm"),
            ):
                with contextlib.suppress(FileNotFoundError):  # another process was first
                    each.unlink()
            deleted.append(path)
        if deleted:
            log.info(
                "request_log_expired", files=[p.name for p in deleted], kept_days=retention_days
            )
        return deleted

    def close(self) -> None:
        for conn in self._open.values():
            conn.close()
        self._open.clear()


def _private(path: Path) -> None:
    """Make the folder (0700) and the day file (0600) before SQLite opens it, whatever the
    umask: they hold prompts and replies. SQLite gives the ``-wal`` and ``-shm`` files
    the database file's mode."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also a file an older version made readable
    finally:
        os.close(fd)


def read_only(path: Path) -> sqlite3.Connection:
    """A day file, read-only."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def as_dict(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    if "stream" in out:
        out["stream"] = bool(out["stream"])
    if "truncated" in out:
        out["truncated"] = bool(out["truncated"])
    return out
