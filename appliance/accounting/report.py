"""Totals of the usage ledger by UTC day, key and model: for ``GET /admin/usage`` and
``appliance usage``.

Filters: a key, a model, and a time range. ``from`` and ``to`` take a date (``to``'s day is
included), an ISO 8601 time (UTC when it names no offset) or Unix seconds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLUMNS = ("day", "key", "model", "requests", "errors", "input_tokens", "output_tokens", "cost")

_QUERY = """
SELECT date(ts, 'unixepoch') AS day, key, model, COUNT(*),
       SUM(status >= 400 AND status != 499), SUM(input_tokens), SUM(output_tokens), SUM(cost),
       GROUP_CONCAT(DISTINCT currency)
FROM requests
WHERE ts >= ? AND ts < ? {extra}
GROUP BY day, key, model
ORDER BY day, key, model
"""


class BadFilter(ValueError):
    """A filter that cannot be read; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Filters:
    """Which rows a report sums."""

    key: str | None = None
    model: str | None = None
    start: float = 0.0
    end: float = float("inf")

    @classmethod
    def parse(
        cls, key: str | None, model: str | None, start: str | None, end: str | None
    ) -> Filters:
        """Filters from their text forms (query parameters, command-line flags)."""
        return cls(
            key or None,
            model or None,
            0.0 if not start else moment("from", start, end_of_day=False),
            float("inf") if not end else moment("to", end, end_of_day=True),
        )


def moment(param: str, text: str, *, end_of_day: bool) -> float:
    """Unix time of ``text``: a date (its start, or with ``end_of_day`` the next day's),
    an ISO 8601 time, or Unix seconds; :class:`BadFilter` if it is none of them, or before
    1970. A start past 9999-12-31 is a :class:`BadFilter` too; an end (``end_of_day``)
    past it is no end (infinity)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # nan, inf, 1e400: no moment
            raise BadFilter(param, f"'{param}' must be a finite number of Unix seconds.")
        return _in_range(param, seconds, end_of_day)
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end_of_day else 0)
            return _in_range(
                param, dt.datetime.combine(day, dt.time(), dt.UTC).timestamp(), end_of_day
            )
        when = dt.datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return _in_range(param, when.timestamp(), end_of_day)
    except BadFilter:
        raise
    except OverflowError:  # the day after 9999-12-31
        return _in_range(param, math.inf, end_of_day)
    except ValueError:
        raise BadFilter(
            param, f"'{param}' must be a date (2026-01-31), an ISO 8601 time or Unix seconds."
        ) from None


LAST_MOMENT = 253_402_300_799.0  # 9999-12-31T23:59:59Z: the last second a UTC day names
_OUT_OF_RANGE = "'{param}' must lie between 1970-01-01 and 9999-12-31 (UTC)."


def _in_range(param: str, seconds: float, end: bool) -> float:
    """``seconds`` if a UTC day holds it (from the Unix epoch on), infinity for an ``end``
    past the last day; else :class:`BadFilter` (a day that cannot be named, no 500)."""
    if end and seconds > LAST_MOMENT:
        return math.inf
    if not 0.0 <= seconds <= LAST_MOMENT:
        raise BadFilter(param, _OUT_OF_RANGE.format(param=param))
    return seconds


def open_ledger(path: Path) -> sqlite3.Connection:
    """The ledger file, read-only."""
    if not path.exists():
        raise FileNotFoundError(f"no usage ledger at {path}")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


@dataclass(frozen=True)
class Report:
    """The totals of a ledger's rows, one per day, key and model, and their currency."""

    rows: list[tuple[Any, ...]]
    currency: str


def report(path: Path, filters: Filters, default_currency: str) -> Report:
    """The totals of the rows ``filters`` select, one per day, key and model.

    The currency is the one the rows were charged in; rows from before the ledger kept
    it count in ``default_currency`` (the config's, or USD).

    Raises:
        BadFilter: the rows were charged in several currencies (``billing.currency``
            changed): their costs cannot be added up; narrow ``from``/``to``.
    """
    extra = ""
    args: list[object] = [filters.start, min(filters.end, 1e18)]
    if filters.key is not None:
        extra += " AND key = ?"
        args.append(filters.key)
    if filters.model is not None:
        extra += " AND model = ?"
        args.append(filters.model)
    conn = open_ledger(path)
    try:
        rows = conn.execute(_QUERY.format(extra=extra), args).fetchall()
    except sqlite3.OperationalError as exc:
        if "currency" not in str(exc):
            raise
        # A file no appliance with a currency column has opened for writing yet.
        rows = conn.execute(_QUERY.format(extra=extra).replace(
            "GROUP_CONCAT(DISTINCT currency)", "NULL"), args).fetchall()  # fmt: skip
    finally:
        conn.close()
    found = {c for row in rows if row[8] for c in row[8].split(",")}
    if len(found) > 1:
        raise BadFilter(
            "from",
            f"the rows were charged in several currencies ({', '.join(sorted(found))}); "
            "choose a period charged in one ('from' and 'to')",
        )
    currency = found.pop() if found else default_currency
    return Report([(*row[:7], round(row[7], 9)) for row in rows], currency)


def as_json(rows: list[tuple[Any, ...]], currency: str) -> dict[str, Any]:
    """The report as JSON: rows as objects, and the grand totals."""
    items = [dict(zip(COLUMNS, row, strict=True)) for row in rows]
    totals = {c: sum(item[c] for item in items) for c in COLUMNS[3:]}
    totals["cost"] = round(totals["cost"], 9)
    return {"object": "usage", "currency": currency, "data": items, "totals": totals}


def as_csv(rows: list[tuple[Any, ...]]) -> str:
    """The report as CSV with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue()


def as_table(rows: list[tuple[Any, ...]], currency: str) -> str:
    """The report as an aligned text table, totals last."""
    shown = [(*(str(v) for v in row[:7]), f"{row[7]:.6f}") for row in rows]
    totals = [sum(row[i] for row in rows) for i in range(3, 8)]
    shown.append(("total", "", "", *(str(v) for v in totals[:4]), f"{totals[4]:.6f}"))
    header = (*COLUMNS[:7], f"cost ({currency})")
    widths = [max(len(r[i]) for r in [header, *shown]) for i in range(len(header))]
    lines = []
    for r in [header, *shown]:
        cells = zip(r, widths, strict=True)
        line = "  ".join(v.rjust(w) if i >= 3 else v.ljust(w) for i, (v, w) in enumerate(cells))
        lines.append(line.rstrip())
    return "\n".join(lines)
