"""The usage ledger: one row per request that reached a model, in an SQLite file.

Rows are written off the request path: :class:`Ledger` buffers them and a task hands
each batch (every :data:`FLUSH_S`, or sooner when :data:`BATCH` rows are waiting) to a
thread of its own, which writes it in one transaction. Closing the ledger (the server's
lifespan shutdown, after the requests in flight have finished) writes what is left, so a
``SIGTERM`` loses nothing; a hot reload never touches the ledger. A process that crashes
loses at most the rows of its last half second or so.

The same transaction adds each row's cost to a table of spend per key and UTC day, which
is what budgets read (see :class:`appliance.accounting.budgets.SpendBook`): several processes
writing to one file see each other's spend after their next flush. The file is in WAL
mode, so readers (``GET /admin/usage``, ``appliance usage``) never block writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import structlog

from appliance.accounting.budgets import DayKey, SpendBook, day_of, days_before
from appliance.accounting.places import place_problem

log = structlog.get_logger("appliance.ledger")

T = TypeVar("T")

FLUSH_S = 0.5
BATCH = 512
MAX_BUFFERED = 200_000  # rows kept while the file cannot be written; older are dropped

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    ts REAL NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost REAL NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    estimated INTEGER NOT NULL,
    request_id TEXT,
    currency TEXT
);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS spend (
    day TEXT NOT NULL,
    key TEXT NOT NULL,
    cost REAL NOT NULL,
    PRIMARY KEY (day, key)
) WITHOUT ROWID;
"""

_COLUMNS = (
    "ts, key, model, route, input_tokens, output_tokens, cost, status, latency_ms, "
    "estimated, request_id, currency"
)
_INSERT = f"INSERT INTO requests ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_ADDED_COLUMNS = {"currency": "TEXT"}  # columns newer than some files: added when opened
_MAX_INT = 2**63 - 1  # SQLite's largest INTEGER
_ADD_SPEND = (
    "INSERT INTO spend (day, key, cost) VALUES (?, ?, ?) "
    "ON CONFLICT (day, key) DO UPDATE SET cost = cost + excluded.cost"
)


class Row(NamedTuple):
    """One request in the ledger (the columns of table ``requests``)."""

    ts: float  # Unix time the request started
    key: str  # the API key's name (``anonymous`` without auth)
    model: str  # the model that answered (an alias's target)
    route: str
    input_tokens: int
    output_tokens: int
    cost: float
    status: int  # the request's outcome (see RequestScope.finish); 499: the client left
    latency_ms: float  # to the end of the reply (for a stream, its last chunk)
    estimated: bool  # tokens estimated from text: the backend sent no usage
    request_id: str | None
    currency: str = ""  # of ``cost``: the config's billing.currency when it was charged

    def checked(self) -> Row:
        """This row with every figure one SQLite can store: an integer past its range is
        clamped, a cost or latency that is not a finite non-negative number is 0. Usage is
        checked where it is read (:mod:`appliance.wire.usage`); this is the last bound."""
        fixed = self._replace(
            input_tokens=_clamp(self.input_tokens),
            output_tokens=_clamp(self.output_tokens),
            cost=_finite(self.cost),
            latency_ms=_finite(self.latency_ms),
        )
        if fixed != self:
            log.warning("ledger_row_clamped", request_id=self.request_id, row=str(self))
        return fixed


def _clamp(value: int) -> int:
    return min(max(int(value), 0), _MAX_INT)


def _finite(value: float) -> float:
    return float(value) if math.isfinite(value) and value >= 0 else 0.0


def spend_of(rows: Iterable[Row]) -> dict[DayKey, float]:
    """The cost of ``rows`` per key and UTC day."""
    out: dict[DayKey, float] = {}
    for row in rows:
        if row.cost > 0:
            day_key = (row.key, day_of(row.ts))
            out[day_key] = out.get(day_key, 0.0) + row.cost
    return out


def path_problem(path: Path) -> str | None:
    """Why the ledger cannot be kept at ``path`` (None: it can); creates nothing, so that
    ``appliance check`` and ``serve`` say so before anything starts."""
    return place_problem(path, _file_problem)


def _file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} is not a file"
    if not os.access(path, os.R_OK | os.W_OK):
        return f"{path} cannot be written"
    try:
        uri = path.resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        return f"{path} is not a usage ledger (SQLite: {exc})"
    return None


class LedgerFile:
    """The SQLite file; used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=10, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(requests)")}
        for name, kind in _ADDED_COLUMNS.items():
            if name not in have:
                self.conn.execute(f"ALTER TABLE requests ADD COLUMN {name} {kind}")

    def write(self, rows: list[Row]) -> None:
        """Append ``rows`` and their spend, in one transaction."""
        spend = [(day, key, cost) for (key, day), cost in spend_of(rows).items()]
        with self.conn:
            self.conn.executemany(_INSERT, rows)
            self.conn.executemany(_ADD_SPEND, spend)

    def spend_since(self, day: str) -> dict[DayKey, float]:
        """Spend per key and day from ``day`` on, every process's rows included."""
        found = self.conn.execute("SELECT key, day, cost FROM spend WHERE day >= ?", (day,))
        return {(key, d): cost for key, d, cost in found}

    def close(self) -> None:
        self.conn.close()


class Ledger:
    """Buffers rows on the event loop and writes them in batches from a thread.

    Args:
        path: The SQLite file (created with its folder if missing).
        book: Budget totals to refresh from the file after each flush (no Redis).
        flush_s: Longest a row waits before it is written.
    """

    def __init__(self, path: Path, book: SpendBook | None = None, flush_s: float = FLUSH_S):
        self.path = path
        self.book = book
        self.flush_s = flush_s
        self._rows: list[Row] = []
        self._file: LedgerFile | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ledger")
        self._task: asyncio.Task[None] | None = None
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time: batches and totals stay in order
        self._stopping = False
        self._closed = False
        self.written = 0

    async def start(self) -> None:
        """Open the file and read the budgets' totals from it; start flushing."""
        self._file = await self._run(LedgerFile, self.path)
        await self._refresh({})
        self._task = asyncio.ensure_future(self._flush_every())

    def append(self, row: Row) -> None:
        """Queue one row (written within ``flush_s``)."""
        row = row.checked()
        if self._closed:
            _write_now(self.path, [row])  # a straggler after shutdown: never lose it
            return
        self._rows.append(row)
        if len(self._rows) >= BATCH:
            self._full.set()

    @property
    def buffered(self) -> int:
        """Rows waiting to be written."""
        return len(self._rows)

    async def flush(self) -> None:
        """Write what is buffered now. A caller cancelled meanwhile (a client that left
        ``/admin/usage``) does not cut it short: rows taken from the buffer are written and
        taken off the budget book's unwritten spend, or they would count twice."""
        await asyncio.shield(self._flush_locked())

    async def _flush_locked(self) -> None:
        async with self._lock:
            await self._flush()

    async def _flush(self) -> None:
        rows, self._rows = self._rows, []
        self._full.clear()
        if rows and self._file is not None:
            try:
                await self._run(self._file.write, rows)
            except sqlite3.OperationalError as exc:  # the file: busy, full, gone
                self._rows[:0] = rows[-MAX_BUFFERED:]  # kept, in order, for the next try
                log.error("ledger_write_failed", error=str(exc), buffered=len(self._rows))
                return
            except Exception as exc:
                log.error("ledger_batch_refused", error=repr(exc), rows=len(rows))
                rows = await self._one_by_one(rows)
            self.written += len(rows)
        await self._refresh(spend_of(rows))

    async def _one_by_one(self, rows: list[Row]) -> list[Row]:
        """Write ``rows`` one at a time; those the file refuses are logged and left out,
        so one bad row never costs the others their place. The rows written."""
        assert self._file is not None
        written = []
        for i, row in enumerate(rows):
            try:
                await self._run(self._file.write, [row])
            except sqlite3.OperationalError as exc:  # the file, not the row: try again later
                self._rows[:0] = rows[i:][-MAX_BUFFERED:]
                log.error("ledger_write_failed", error=str(exc), buffered=len(self._rows))
                break
            except Exception as exc:
                log.error("ledger_row_refused", error=repr(exc), row=str(row))
            else:
                written.append(row)
        return written

    async def close(self) -> None:
        """Write everything buffered and close the file."""
        self._stopping = True
        self._full.set()
        if self._task is not None:  # it ends after one last flush; a write is never cut
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()
        self._closed = True
        if self._file is not None:
            await self._run(self._file.close)
        self._thread.shutdown(wait=True)
        log.info("ledger_closed", path=str(self.path), rows_written=self.written)

    async def _flush_every(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.flush_s)
            try:
                await self.flush()
            except Exception:
                log.exception("ledger_flush_failed", buffered=len(self._rows))

    async def _refresh(self, batch: dict[DayKey, float]) -> None:
        if self.book is None or self._file is None:
            return
        since = days_before(day_of(time.time()))
        try:
            totals = await self._run(self._file.spend_since, since)
        except sqlite3.Error as exc:
            log.error("ledger_read_failed", error=str(exc))
            return
        self.book.written(batch, totals)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)


def _write_now(path: Path, rows: list[Row]) -> None:
    file = LedgerFile(path)
    try:
        file.write(rows)
    finally:
        file.close()
