"""Reading the request log: recent requests by filter, newest first, and one by id.

Both read every day file the time range touches (:mod:`.requestfiles`), newest first,
read-only; the writer is never blocked.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from appliance.accounting.budgets import day_of
from appliance.accounting.report import BadFilter, moment
from appliance.accounting.requestfiles import SUMMARY, as_dict, day_files, read_only

DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Query:
    """Which requests to list."""

    key: str | None = None
    model: str | None = None  # as asked, or the model that answered
    status: int | None = None
    since: float = 0.0
    until: float = float("inf")
    trace_id: str | None = None
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, params: dict[str, str | None]) -> Query:
        """A query from its text forms (the query string); :class:`BadFilter` names a bad one."""
        status = params.get("status")
        limit = params.get("limit")
        trace_id = params.get("trace_id")
        since, until = params.get("since"), params.get("until")
        if trace_id and not _TRACE_ID.match(trace_id.lower()):
            raise BadFilter("trace_id", "'trace_id' must be 32 hexadecimal digits.")
        return cls(
            key=params.get("key") or None,
            model=params.get("model") or None,
            status=_integer("status", status, 100, 599) if status else None,
            since=moment("since", since, end_of_day=False) if since else 0.0,
            until=moment("until", until, end_of_day=True) if until else float("inf"),
            trace_id=trace_id.lower() if trace_id else None,
            limit=_integer("limit", limit, 1, MAX_LIMIT) if limit else DEFAULT_LIMIT,
        )

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["ts >= ?", "ts < ?"]
        args: list[Any] = [self.since, min(self.until, 1e18)]
        if self.key is not None:
            clauses.append("key = ?")
            args.append(self.key)
        if self.model is not None:
            clauses.append("(model = ? OR served_by = ?)")
            args += [self.model, self.model]
        if self.status is not None:
            clauses.append("status = ?")
            args.append(self.status)
        if self.trace_id is not None:
            clauses.append("trace_id = ?")
            args.append(self.trace_id)
        return " AND ".join(clauses), args


def _integer(param: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadFilter(param, f"'{param}' must be an integer.") from None
    if not low <= value <= high:
        raise BadFilter(param, f"'{param}' must be between {low} and {high}.")
    return value


def search(folder: Path, query: Query) -> list[dict[str, Any]]:
    """Summaries of the requests ``query`` selects, newest first, at most ``query.limit``."""
    first = day_of(query.since) if query.since > 0 else ""
    last = day_of(query.until) if query.until < 1e11 else "9999-12-31"
    where, args = query.where()
    found: list[dict[str, Any]] = []
    for day, path in day_files(folder):
        if day > last:
            continue
        if day < first or len(found) >= query.limit:
            break
        sql = f"SELECT {', '.join(SUMMARY)} FROM requests WHERE {where} ORDER BY ts DESC LIMIT ?"
        found += _read(path, sql, [*args, query.limit - len(found)])
    return found


def one(folder: Path, request_id: str) -> dict[str, Any] | None:
    """The request with id ``request_id`` (the latest, if a caller reused an id), with its
    prompt and reply; None if the log has none."""
    for _day, path in day_files(folder):
        rows = _read(
            path, "SELECT * FROM requests WHERE id = ? ORDER BY ts DESC LIMIT 1", [request_id]
        )
        if rows:
            entry = rows[0]
            for name in ("request", "reply"):
                entry[name] = _json(entry[name])
            return entry
    return None


def _read(path: Path, sql: str, args: list[Any]) -> list[dict[str, Any]]:
    try:
        conn = read_only(path)
    except sqlite3.OperationalError:  # deleted by retention meanwhile
        return []
    try:
        return [as_dict(row) for row in conn.execute(sql, args)]
    except sqlite3.OperationalError:  # a file being created: no table yet
        return []
    finally:
        conn.close()


def _json(text: str | None) -> Any:
    """A kept prompt or reply: its JSON, or the text itself where it was cut."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
