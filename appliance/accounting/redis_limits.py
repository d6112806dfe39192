"""Per-key limits and budgets shared by every replica, counted in Redis.

Each key's requests and tokens are counted in buckets of a hundredth of the window (a hash
per kind: one field per bucket, plus the running total ``t``, the first bucket ``f`` and
the last ``l``). An admission drops the buckets that left the window from the running
total and compares it with the limit: its cost does not grow with traffic (a bucket is
dropped once; a refusal reads at most the window's hundred buckets to say when to retry).
A bucket counts until all of it has left the window, so a key never gets more than its
limit in any window and is refused at most a hundredth of a window early.

Spend is counted per key and UTC day (nano-units of the currency); a budget's period is
the sum of its days. One Lua script checks budget, rpm and tpm and records the request
atomically, with Redis's own clock, so N replicas enforce one limit. Every key one script
touches carries the API key's hash tag (``{name}``), so the script runs on Redis Cluster
(``state.redis_cluster``) as on a single Redis.

When Redis cannot be reached the configured policy decides: ``open`` (the default) admits
the request and logs loudly, at most every few seconds, and counts it in
``appliance_limiter_errors_total``; ``closed`` answers 503. Redis coming back needs
nothing: every call tries it again.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal

import structlog
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from appliance.accounting.budgets import KEEP_DAYS, day_of, period_days
from appliance.accounting.limits import Quota, exceeded, limited
from appliance.config.auth import BudgetConfig
from appliance.errors import ServiceUnavailableError

# What a call into the Redis client may raise when Redis or the client fails: Redis's errors,
# socket errors, and the client's own faults on a connection torn down under it (seen in
# redis-py: AttributeError/TypeError on a ``None`` writer). All mean "the limiter is
# unavailable" (fail open or closed as configured), never a 500.
CLIENT_FAULTS: tuple[type[BaseException], ...] = (RedisError, OSError, AttributeError, TypeError)

log = structlog.get_logger("appliance.limits")

BUCKETS = 100  # per window: the limit holds within 1% of the window
NANO = 1_000_000_000  # spend is kept in integer nano-units of the currency

_BUCKETS = """
local function trim(key, cut)
  local first = tonumber(redis.call('HGET', key, 'f'))
  if not first then return 0 end
  if tonumber(redis.call('HGET', key, 'l')) < cut then
    redis.call('DEL', key)
    return 0
  end
  local total = tonumber(redis.call('HGET', key, 't'))
  if first < cut then
    for b = first, cut - 1 do
      local v = redis.call('HGET', key, b)
      if v then
        total = total - tonumber(v)
        redis.call('HDEL', key, b)
      end
    end
    redis.call('HSET', key, 'f', cut, 't', total)
  end
  return total
end
local function add(key, bucket, amount, ttl)
  redis.call('HINCRBY', key, bucket, amount)
  redis.call('HINCRBY', key, 't', amount)
  redis.call('HSETNX', key, 'f', bucket)
  redis.call('HSET', key, 'l', bucket)
  redis.call('PEXPIRE', key, ttl)
end
local function wait(key, total, limit, width, win, now)
  local left = total
  local first = tonumber(redis.call('HGET', key, 'f'))
  local last = tonumber(redis.call('HGET', key, 'l'))
  for b = first, last do
    local v = redis.call('HGET', key, b)
    if v then
      left = left - tonumber(v)
      if left < limit then return (b + 1) * width + win - now end
    end
  end
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local width = tonumber(ARGV[2])
local cut = math.floor((now - win) / width)
local bucket = math.floor(now / width)
"""

_ADMIT = (
    _BUCKETS
    + """
local rpm = tonumber(ARGV[3])
local tpm = tonumber(ARGV[4])
local budget = tonumber(ARGV[5])
local spent = 0
if budget >= 0 then
  if #KEYS > 2 then
    local days = redis.call('MGET', unpack(KEYS, 3))
    for i = 1, #days do
      if days[i] then spent = spent + tonumber(days[i]) end
    end
  end
  if spent >= budget then return {0, 3, 0, 0, 0, spent} end
end
local count = 0
if rpm >= 0 then count = trim(KEYS[1], cut) end
local used = 0
if tpm >= 0 then used = trim(KEYS[2], cut) end
local function reset(key)
  local last = tonumber(redis.call('HGET', key, 'l'))
  if not last then return 0 end
  return (last + 1) * width + win - now
end
if rpm >= 0 and count >= rpm then
  local w = wait(KEYS[1], count, rpm, width, win, now)
  return {0, 1, w, count, used, spent, reset(KEYS[1]), reset(KEYS[2])}
end
if tpm >= 0 and used >= tpm then
  local w = wait(KEYS[2], used, tpm, width, win, now)
  return {0, 2, w, count, used, spent, reset(KEYS[1]), reset(KEYS[2])}
end
if rpm >= 0 then
  add(KEYS[1], bucket, 1, win + width)
  count = count + 1
end
return {1, 0, 0, count, used, spent, reset(KEYS[1]), reset(KEYS[2])}
"""
)

_SPEND = (
    _BUCKETS
    + """
local tokens = tonumber(ARGV[3])
local nanos = tonumber(ARGV[4])
if tokens > 0 then
  trim(KEYS[1], cut)
  add(KEYS[1], bucket, tokens, win + width)
end
if nanos > 0 then
  redis.call('INCRBY', KEYS[2], nanos)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[5]))
end
return 1
"""
)
SCRIPTS = (_ADMIT, _SPEND)


def hash_tag(name: str) -> str:
    """The Redis Cluster hash tag of an API key's name: the name, or a digest of it when
    braces in it would cut the tag short."""
    if "{" in name or "}" in name or not name:
        return hashlib.sha256(name.encode()).hexdigest()[:16]
    return name


class RedisLimiter:
    """Bucketed sliding-window rpm/tpm and daily spend kept in Redis, for several replicas."""

    def __init__(
        self,
        url: str,
        *,
        window_s: float = 60.0,
        on_error: Literal["open", "closed"] = "open",
        timeout_s: float = 0.25,
        prefix: str = "appliance:limits",
        on_failure: Any = None,
        cluster: bool = False,
    ) -> None:
        self.window_ms = max(int(window_s * 1000), BUCKETS)
        self.width_ms = self.window_ms // BUCKETS
        self.on_error = on_error
        self.prefix = prefix
        self.on_failure = on_failure
        # A pooled connection that Redis dropped (a restart), or one refused while a burst
        # opens many at once, fails; try fresh ones, briefly, before failing open/closed.
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.005), retries=2),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        }
        self.client: aioredis.Redis | RedisCluster = (
            RedisCluster.from_url(url, **options) if cluster else aioredis.from_url(url, **options)
        )
        # Scripts run by their SHA; a node that does not know one yet (first use, a restart)
        # answers NOSCRIPT and the call is sent again with the script itself, to the same
        # node, which keeps it. Nothing is loaded on every node at once: a burst of such
        # loads is what redis-py's cluster client did not survive (11 of 40 bursts of 8
        # first calls failed), and one node down would fail every key's load.
        self._shas = {script: hashlib.sha1(script.encode()).hexdigest() for script in SCRIPTS}
        self._last_warning = 0.0
        self.failures = 0

    def keys_of(self, key: str) -> tuple[str, str, str]:
        """The request and token bucket hashes of ``key``, and its spend keys' prefix."""
        base = f"{self.prefix}:{{{hash_tag(key)}}}"
        return f"{base}:requests", f"{base}:tokens", f"{base}:spend:"

    async def admit(
        self,
        key: str,
        rpm: int | None,
        tpm: int | None,
        budget: BudgetConfig | None = None,
        currency: str = "USD",
    ) -> Quota:
        requests, tokens, spend = self.keys_of(key)
        wall = time.time()
        days = [spend + d for d in period_days(budget.period, wall)] if budget else []
        args: list[int] = [
            self.window_ms,
            self.width_ms,
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            -1 if budget is None else round(budget.amount * NANO),
        ]
        try:
            reply = await self._run(_ADMIT, [requests, tokens, *days], args)
        except CLIENT_FAULTS as exc:
            return self._unavailable(exc, rpm, tpm)
        allowed, which, wait_ms, count, used, spent, *resets = (int(v) for v in reply)
        if not allowed and which == 3 and budget is not None:
            raise exceeded(budget, spent / NANO, currency, wall)
        reset_requests, reset_tokens = (max(float(ms), 0.0) / 1000 for ms in resets)
        quota = Quota(
            limit_requests=rpm,
            remaining_requests=None if rpm is None else max(rpm - count, 0),
            reset_requests_s=reset_requests,
            limit_tokens=tpm,
            remaining_tokens=None if tpm is None else max(tpm - used, 0),
            reset_tokens_s=reset_tokens,
        )
        if not allowed:
            wait, window = max(float(wait_ms), 0.0) / 1000, self.window_ms / 1000
            if which == 1:
                raise limited("requests", rpm or 0, wait, window, quota)
            raise limited("tokens", tpm or 0, wait, window, quota)
        return quota

    async def spend(self, key: str, tokens: int, cost: float = 0.0, day: str = "") -> None:
        nanos = round(cost * NANO) if cost > 0 else 0
        if tokens <= 0 and nanos <= 0:
            return
        _, token_key, spend = self.keys_of(key)
        args = [self.window_ms, self.width_ms, max(tokens, 0), nanos, KEEP_DAYS * 86400]
        try:
            await self._run(_SPEND, [token_key, spend + (day or day_of(time.time()))], args)
        except CLIENT_FAULTS as exc:
            self._note_failure(exc)

    async def spent(self, budgets: dict[str, BudgetConfig]) -> dict[str, float]:
        now, out = time.time(), {}
        for key, budget in budgets.items():
            prefix = self.keys_of(key)[2]
            try:
                days = await self.client.mget([prefix + d for d in period_days(budget.period, now)])
            except CLIENT_FAULTS as exc:
                self._note_failure(exc)
                return {}
            out[key] = sum(int(v) for v in days if v is not None) / NANO
        return out

    async def close(self) -> None:
        await self.client.aclose()

    async def _run(self, script: str, keys: list[str], args: list[int]) -> Any:
        try:
            return await self.client.evalsha(self._shas[script], len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(script, len(keys), *keys, *args)

    def _unavailable(self, exc: BaseException, rpm: int | None, tpm: int | None) -> Quota:
        self._note_failure(exc)
        if self.on_error == "closed":
            raise ServiceUnavailableError(
                "The rate limiter is unavailable; retry shortly.",
                code="limiter_unavailable",
                retry_after=1,
            )
        return Quota(rpm, None, 0.0, tpm, None, 0.0)

    def _note_failure(self, exc: BaseException) -> None:
        self.failures += 1
        if self.on_failure is not None:
            self.on_failure()
        now = time.monotonic()
        if now - self._last_warning > 5:
            self._last_warning = now
            log.error(
                "limiter_unavailable",
                error=f"{type(exc).__name__}: {exc}",
                policy=f"fail-{self.on_error}",
                failures=self.failures,
            )
