"""Per-key request and token limits over a sliding window, and spend budgets.

A key with ``rpm`` is admitted while fewer than ``rpm`` of its requests started in the
last window; a key with ``tpm`` while the tokens its requests used in the last window are
below ``tpm`` (tokens are counted when a reply ends, from its ``usage``). Over a limit:
429 with ``Retry-After`` at the moment a slot frees. The counters live outside any
cluster, so a reload does not reset them; they are kept per key *name*.

:class:`LocalLimiter` keeps windows in this process. A limiter shared by several replicas
implements the same :class:`Limiter` protocol.

A key with a ``budget`` is admitted while what it spent in the budget's period (see
:mod:`appliance.accounting.budgets`) is below the amount; a request admitted before the budget ran
out finishes, and is charged.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from appliance.accounting.budgets import SpendBook, day_of, days_before, period_bounds, period_days
from appliance.config.auth import BudgetConfig
from appliance.errors import QuotaExceededError, RateLimitError


@dataclass(frozen=True, slots=True)
class Quota:
    """What a key has left, for the ``x-ratelimit-*`` headers.

    As OpenAI's: ``limit`` the most the window admits, ``remaining`` what is left of it,
    ``reset`` the time until the limit is back to its initial state (all of it free),
    each of requests and of tokens counted in its own window.
    """

    limit_requests: int | None
    remaining_requests: int | None
    reset_requests_s: float
    limit_tokens: int | None
    remaining_tokens: int | None
    reset_tokens_s: float

    def headers(self) -> dict[str, str]:
        """OpenAI's rate-limit headers."""
        out: dict[str, str] = {}
        if self.limit_requests is not None and self.remaining_requests is not None:
            out["x-ratelimit-limit-requests"] = str(self.limit_requests)
            out["x-ratelimit-remaining-requests"] = str(self.remaining_requests)
            out["x-ratelimit-reset-requests"] = duration(self.reset_requests_s)
        if self.limit_tokens is not None and self.remaining_tokens is not None:
            out["x-ratelimit-limit-tokens"] = str(self.limit_tokens)
            out["x-ratelimit-remaining-tokens"] = str(self.remaining_tokens)
            out["x-ratelimit-reset-tokens"] = duration(self.reset_tokens_s)
        return out


class Limiter(Protocol):
    """Admission and accounting of per-key limits."""

    async def admit(
        self,
        key: str,
        rpm: int | None,
        tpm: int | None,
        budget: BudgetConfig | None = None,
        currency: str = "USD",
    ) -> Quota:
        """Count a request, or raise :class:`RateLimitError` if over a limit.

        Raises:
            RateLimitError: over ``rpm`` or ``tpm``.
            QuotaExceededError: the ``budget`` of the current period is spent.
        """

    async def spend(self, key: str, tokens: int, cost: float = 0.0, day: str = "") -> None:
        """Record the tokens and cost of a finished request (``day``: its UTC day)."""

    async def spent(self, budgets: dict[str, BudgetConfig]) -> dict[str, float]:
        """What each key spent in its budget's current period."""

    async def close(self) -> None:
        """Release connections."""


class _Window:
    """Amounts with their times, oldest first, within one window."""

    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def trim(self, since: float) -> None:
        while self.entries and self.entries[0][0] <= since:
            self.total -= self.entries.popleft()[1]

    def add(self, now: float, amount: int) -> None:
        self.entries.append((now, amount))
        self.total += amount

    def wait_until_below(self, limit: int, window: float, now: float) -> float:
        """Seconds until the total drops below ``limit`` as entries age out."""
        total = self.total
        for stamp, amount in self.entries:
            if total < limit:
                break
            total -= amount
            if total < limit:
                return max(stamp + window - now, 0.0)
        return 0.0


class LocalLimiter:
    """Sliding-window limits kept in this process."""

    def __init__(self, window_s: float = 60.0, book: SpendBook | None = None) -> None:
        self.window_s = window_s
        self.book = book if book is not None else SpendBook()
        self._requests: dict[str, _Window] = {}
        self._tokens: dict[str, _Window] = {}
        self._today = ""

    async def admit(
        self,
        key: str,
        rpm: int | None,
        tpm: int | None,
        budget: BudgetConfig | None = None,
        currency: str = "USD",
    ) -> Quota:
        if budget is not None:
            wall = time.time()
            spent = self.book.spent(key, period_days(budget.period, wall))
            if spent >= budget.amount:
                raise exceeded(budget, spent, currency, wall)
        now = time.monotonic()
        since = now - self.window_s
        requests = self._requests.setdefault(key, _Window())
        tokens = self._tokens.setdefault(key, _Window())
        requests.trim(since)
        tokens.trim(since)
        if rpm is not None and requests.total >= rpm:
            wait = requests.wait_until_below(rpm, self.window_s, now)
            quota = self._quota(rpm, tpm, requests, tokens, now)
            raise limited("requests", rpm, wait, self.window_s, quota)
        if tpm is not None and tokens.total >= tpm:
            wait = tokens.wait_until_below(tpm, self.window_s, now)
            quota = self._quota(rpm, tpm, requests, tokens, now)
            raise limited("tokens", tpm, wait, self.window_s, quota)
        requests.add(now, 1)
        return self._quota(rpm, tpm, requests, tokens, now)

    def _quota(
        self, rpm: int | None, tpm: int | None, requests: _Window, tokens: _Window, now: float
    ) -> Quota:
        return Quota(
            limit_requests=rpm,
            remaining_requests=None if rpm is None else max(rpm - requests.total, 0),
            reset_requests_s=_reset(requests, self.window_s, now),
            limit_tokens=tpm,
            remaining_tokens=None if tpm is None else max(tpm - tokens.total, 0),
            reset_tokens_s=_reset(tokens, self.window_s, now),
        )

    async def spend(self, key: str, tokens: int, cost: float = 0.0, day: str = "") -> None:
        if tokens > 0:
            self._tokens.setdefault(key, _Window()).add(time.monotonic(), tokens)
        if cost > 0:
            day = day or day_of(time.time())
            if day > self._today:  # a new day: forget unwritten totals no period reaches
                self._today = day
                self.book.forget_before(days_before(day))
            self.book.add(key, day, cost)

    async def spent(self, budgets: dict[str, BudgetConfig]) -> dict[str, float]:
        now = time.time()
        return {
            key: self.book.spent(key, period_days(budget.period, now))
            for key, budget in budgets.items()
        }

    async def close(self) -> None:
        return None


def limited(
    what: str, limit: int, wait: float, window_s: float, quota: Quota | None = None
) -> RateLimitError:
    """The 429 for a key over its ``limit`` of ``what`` per window of ``window_s``.

    Its headers are the key's whole ``quota`` (both the requests and the tokens trios of
    the limits it has), as on an admitted request.
    """
    per = "requests" if what == "requests" else "tokens"
    headers = quota.headers() if quota is not None else {}
    headers.update({f"x-ratelimit-limit-{per}": str(limit), f"x-ratelimit-remaining-{per}": "0"})
    return RateLimitError(
        f"Rate limit reached: {limit} {per} {per_window(window_s)} for this API key. "
        f"Retry in {duration(wait)}.",
        retry_after=wait,
        headers=headers,
    )


def exceeded(budget: BudgetConfig, spent: float, currency: str, now: float) -> QuotaExceededError:
    """The 429 for a key that spent ``spent`` of ``budget``; says when the period resets."""
    _, resets = period_bounds(budget.period, now)
    wait = max(resets.timestamp() - now, 0.0)
    return QuotaExceededError(
        f"You exceeded your current quota: this API key's budget of {budget.amount:g} "
        f"{currency} per {budget.period} is spent ({spent:.6g} {currency} used). "
        f"It resets at {resets.strftime('%Y-%m-%dT%H:%M:%SZ')} (in {duration(wait)}).",
        retry_after=wait,
        headers={"x-should-retry": "false"},
    )


_UNITS = {1.0: "second", 60.0: "minute", 3600.0: "hour"}


def per_window(window_s: float) -> str:
    """How a limit's window reads: ``per minute`` for 60 s, ``per 1m30s`` for 90 s."""
    unit = _UNITS.get(float(window_s))
    return f"per {unit}" if unit else f"per {duration(window_s)}"


def _reset(window: _Window, length: float, now: float) -> float:
    """OpenAI's ``x-ratelimit-reset-*``: the time until the limit is back to its initial
    state, i.e. until the newest amount in the window has left it."""
    return max(window.entries[-1][0] + length - now, 0.0) if window.entries else 0.0


def duration(seconds: float) -> str:
    """OpenAI's reset format: ``120ms``, ``1.5s``, ``6m0s``, ``1h2m3s``.

    Rounded once, at the precision shown, before it is split into units, so no unit
    ever reaches its next one (never ``1m60s`` or ``1000ms``).
    """
    ms = max(round(seconds * 1000), 0)
    if ms < 1000:
        return f"{ms}ms"
    tenths = round(ms / 100)
    if tenths < 600:
        whole, tenth = divmod(tenths, 10)
        return f"{whole}.{tenth}s" if tenth else f"{whole}s"
    hours, rest = divmod(round(ms / 1000), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"
