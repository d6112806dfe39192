"""Per-key limits shared by every replica, counted in Redis.

Each key has two sorted sets per window: the requests it started (score: time) and the
tokens it used (score: time, member: ``<tokens>:<id>``). One Lua script trims both,
checks both limits and records the request atomically, with Redis's own clock, so N
replicas enforce one limit and their clocks do not matter.

When Redis cannot be reached the configured policy decides: ``open`` (the default) admits
the request and logs loudly, at most every few seconds, and counts it in
``appliance_limiter_errors_total``; ``closed`` answers 503. Redis coming back needs
nothing: every call tries it again.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import structlog
from redis import asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from appliance.errors import ServiceUnavailableError
from appliance.limits import Quota, limited

log = structlog.get_logger("appliance.limits")

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local win = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - win)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - win)
local count = redis.call('ZCARD', KEYS[1])
if rpm >= 0 and count >= rpm then
  local first = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  return {0, 1, tonumber(first[2]) + win - now, count, 0}
end
local used = 0
local entries = {}
if tpm >= 0 then
  entries = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #entries, 2 do
    used = used + tonumber(string.match(entries[i], '^(%d+):'))
  end
  if used >= tpm then
    local left = used
    for i = 1, #entries, 2 do
      left = left - tonumber(string.match(entries[i], '^(%d+):'))
      if left < tpm then
        return {0, 2, tonumber(entries[i + 1]) + win - now, count, used}
      end
    end
  end
end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], win)
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {1, 0, tonumber(oldest[2]) + win - now, count + 1, used}
"""

_SPEND = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class RedisLimiter:
    """Sliding-window rpm/tpm kept in Redis, for several replicas."""

    def __init__(
        self,
        url: str,
        *,
        window_s: float = 60.0,
        on_error: Literal["open", "closed"] = "open",
        timeout_s: float = 0.25,
        prefix: str = "appliance:limits",
        on_failure: Any = None,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.on_error = on_error
        self.prefix = prefix
        self.on_failure = on_failure
        self.client = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # A pooled connection that Redis dropped (a restart) fails once; try a fresh one.
            retry=Retry(NoBackoff(), retries=1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._admit = self.client.register_script(_ADMIT)
        self._spend = self.client.register_script(_SPEND)
        self._last_warning = 0.0
        self.failures = 0

    async def admit(self, key: str, rpm: int | None, tpm: int | None) -> Quota:
        keys = [f"{self.prefix}:{key}:requests", f"{self.prefix}:{key}:tokens"]
        args: list[int | str] = [
            self.window_ms,
            -1 if rpm is None else rpm,
            -1 if tpm is None else tpm,
            f"{time.time_ns()}:{secrets.token_hex(4)}",
        ]
        try:
            allowed, which, reset_ms, count, used = await self._admit(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            return self._unavailable(exc, rpm, tpm)
        reset = max(float(reset_ms), 0.0) / 1000
        if not allowed:
            if which == 1:
                raise limited("requests", rpm or 0, reset, self.window_ms / 1000)
            raise limited("tokens", tpm or 0, reset, self.window_ms / 1000)
        return Quota(
            limit_requests=rpm,
            remaining_requests=None if rpm is None else max(rpm - int(count), 0),
            reset_requests_s=reset,
            limit_tokens=tpm,
            remaining_tokens=None if tpm is None else max(tpm - int(used), 0),
            reset_tokens_s=reset,
        )

    async def spend(self, key: str, tokens: int) -> None:
        if tokens <= 0:
            return
        try:
            await self._spend(
                keys=[f"{self.prefix}:{key}:tokens"],
                args=[f"{tokens}:{time.time_ns()}:{secrets.token_hex(4)}", self.window_ms],
            )
        except (RedisError, OSError) as exc:
            self._note_failure(exc)

    async def close(self) -> None:
        await self.client.aclose()

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
