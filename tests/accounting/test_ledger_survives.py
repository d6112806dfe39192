"""The ledger cannot die: a row the file refuses costs no other row its place, an absurd
figure is clamped, and the writer task keeps writing what comes after (in process)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import structlog

from appliance.accounting.ledger import Ledger, Row
from tests.support.poll import until_async
from tests.support.server import ledger_rows

MAX_INT = 2**63 - 1


def row(request_id: str, **fields: Any) -> Row:
    values: dict[str, Any] = {
        "ts": time.time(),
        "key": "k",
        "model": "m",
        "route": "/v1/chat/completions",
        "input_tokens": 5,
        "output_tokens": 2,
        "cost": 0.25,
        "status": 200,
        "latency_ms": 1.0,
        "estimated": False,
        "request_id": request_id,
        "currency": "EUR",
        **fields,
    }
    return Row(**values)


def ids(path: Path) -> list[str]:
    return [r[0] for r in ledger_rows(path, "SELECT request_id FROM requests ORDER BY rowid")]


def test_checked_clamps_what_sqlite_cannot_store() -> None:
    absurd = row("absurd", input_tokens=10**19, output_tokens=-3, cost=math.inf, latency_ms=-1.0)
    fixed = absurd.checked()
    assert fixed.input_tokens == MAX_INT
    assert fixed.output_tokens == 0
    assert fixed.cost == 0.0 and fixed.latency_ms == 0.0
    sane = row("sane")
    assert sane.checked() == sane
    nan = row("nan", cost=math.nan).checked()
    assert nan.cost == 0.0


async def test_a_row_the_file_refuses_does_not_stop_the_others(tmp_path: Path) -> None:
    path = tmp_path / "usage.sqlite"
    ledger = Ledger(path, flush_s=0.05)
    await ledger.start()
    try:
        with structlog.testing.capture_logs() as logs:
            ledger.append(row("before"))
            ledger.append(row("unbindable", route=object()))  # no SQLite type for it
            ledger.append(row("absurd", input_tokens=10**19, cost=math.nan))
            ledger.append(row("after"))
            await until_async(lambda: len(ids(path)) >= 3, what="the good rows written")
        assert ids(path) == ["before", "absurd", "after"]
        assert [e["event"] for e in logs if e["event"].startswith("ledger_row")] == [
            "ledger_row_clamped",
            "ledger_row_refused",
        ]
        absurd = ledger_rows(
            path, "SELECT input_tokens, cost, currency FROM requests WHERE request_id = 'absurd'"
        )
        assert absurd == [(MAX_INT, 0.0, "EUR")]

        # The writer task is still there and keeps writing what comes later, on its own.
        assert ledger._task is not None and not ledger._task.done()
        for n in range(5):
            ledger.append(row(f"later-{n}"))
        await until_async(lambda: len(ids(path)) == 8, what="the later rows written")
        assert ledger._task is not None and not ledger._task.done()
    finally:
        await ledger.close()
    assert ids(path)[-5:] == [f"later-{n}" for n in range(5)]
    spend = ledger_rows(path, "SELECT key, cost FROM spend")
    assert spend == [("k", 0.25 * 7)]  # every written row's cost, the refused one's not


async def test_a_flush_whose_caller_is_cancelled_counts_its_spend_once(tmp_path: Path) -> None:
    """A client that leaves ``/admin/usage`` cancels the flush it awaits; the rows it had
    taken are still written and leave the budget book's unwritten spend (not counted twice)."""
    import asyncio
    import sqlite3

    from appliance.accounting.budgets import SpendBook, day_of

    path = tmp_path / "usage.sqlite"
    book = SpendBook()
    ledger = Ledger(path, book, flush_s=3600)  # flushed only when asked
    await ledger.start()
    try:
        now = time.time()
        book.add("k", day_of(now), 1.0)  # as the charge does before its row
        ledger.append(row("r1", ts=now, cost=1.0))
        blocker = sqlite3.connect(path, timeout=10, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the file is busy: the write waits
        waiting = asyncio.ensure_future(ledger.flush())
        await until_async(lambda: ledger.buffered == 0, what="the flush took the row")
        waiting.cancel()  # the caller leaves while the write waits for the file
        blocker.execute("COMMIT")
        blocker.close()
        await until_async(lambda: ids(path) == ["r1"], what="the row written anyway")
        await until_async(lambda: ledger.written == 1, what="the write counted")
        assert book.spent("k", [day_of(now)]) == 1.0
    finally:
        await ledger.close()
