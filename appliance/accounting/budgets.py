"""Budgets per key: calendar periods, spend per key and UTC day, the 429 when spent.

Spend is kept per key and UTC day; a budget's period (``day``, ``week`` from Monday,
``month``) is the sum of its days so far, so a budget added or changed on reload counts
what the key already spent. Periods begin at 00:00 UTC.

:class:`SpendBook` holds the totals this process checks when there is no Redis: what the
ledger file says (every process writing to it, refreshed after each flush) plus what this
process charged and has not written yet. With ``state.redis_url`` the same day totals
live in Redis instead (see :mod:`appliance.accounting.redis_limits`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

UTC = dt.UTC
DayKey = tuple[str, str]  # (key name, "YYYY-MM-DD")
KEEP_DAYS = 32  # the longest period (a month) and a day of slack


def day_of(timestamp: float) -> str:
    """The UTC day of a Unix time, ``YYYY-MM-DD``."""
    return dt.datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def period_bounds(period: str, now: float) -> tuple[dt.date, dt.datetime]:
    """The first day of the period holding ``now``, and the moment the next one begins."""
    today = dt.datetime.fromtimestamp(now, UTC).date()
    if period == "day":
        start, end = today, today + dt.timedelta(days=1)
    elif period == "week":
        start = today - dt.timedelta(days=today.weekday())
        end = start + dt.timedelta(days=7)
    else:
        start = today.replace(day=1)
        end = (start + dt.timedelta(days=32)).replace(day=1)
    return start, dt.datetime.combine(end, dt.time(), UTC)


def period_days(period: str, now: float) -> list[str]:
    """The UTC days of the period so far, first to today (at most 31)."""
    start, _ = period_bounds(period, now)
    today = dt.datetime.fromtimestamp(now, UTC).date()
    return [(start + dt.timedelta(days=i)).isoformat() for i in range((today - start).days + 1)]


def days_before(day: str, days: int = KEEP_DAYS) -> str:
    """The UTC day ``days`` before ``day``."""
    return (dt.date.fromisoformat(day) - dt.timedelta(days=days)).isoformat()


class SpendBook:
    """Spend per key and UTC day in this process: the ledger file's totals plus unwritten."""

    def __init__(self) -> None:
        self._written: dict[DayKey, float] = {}
        self._pending: dict[DayKey, float] = {}

    def add(self, key: str, day: str, cost: float) -> None:
        """Count a charge not yet in the ledger file."""
        if cost > 0:
            self._pending[(key, day)] = self._pending.get((key, day), 0.0) + cost

    def written(self, batch: Mapping[DayKey, float], totals: Mapping[DayKey, float]) -> None:
        """A batch reached the file; ``totals`` is the file's view now (batch included)."""
        for day_key, cost in batch.items():
            left = self._pending.get(day_key, 0.0) - cost
            if left > 1e-12:
                self._pending[day_key] = left
            else:
                self._pending.pop(day_key, None)
        self._written = dict(totals)

    def spent(self, key: str, days: Iterable[str]) -> float:
        """What ``key`` spent on ``days``."""
        return sum(
            self._written.get((key, d), 0.0) + self._pending.get((key, d), 0.0) for d in days
        )

    def forget_before(self, day: str) -> None:
        """Drop unwritten totals of days before ``day`` (without a ledger they pile up)."""
        for day_key in [k for k in self._pending if k[1] < day]:
            del self._pending[day_key]

    def by_key(self, days_of: Mapping[str, list[str]]) -> dict[str, float]:
        """Spend of each key over its own days (``{key: days}``), for the status page."""
        return {key: self.spent(key, days) for key, days in days_of.items()}
