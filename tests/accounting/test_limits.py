"""Rate-limit messages and reset headers say the configured window, in OpenAI's format."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.accounting.limits import LocalLimiter, Quota, duration, per_window
from appliance.accounting.redis_limits import RedisLimiter
from appliance.errors import RateLimitError
from tests.support.redis_server import RedisServer


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.12, "120ms"),
        (0.9996, "1s"),  # never 1000ms
        (1, "1s"),
        (1.5, "1.5s"),
        (59.94, "59.9s"),
        (59.96, "1m0s"),  # never 60s
        (60, "1m0s"),
        (119.6, "2m0s"),  # never 1m60s
        (360, "6m0s"),
        (3599.7, "1h0m0s"),  # never 59m60s
        (3723, "1h2m3s"),
        (-3, "0ms"),
    ],
)
def test_durations_never_reach_the_next_unit(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("window", "text"),
    [(60, "per minute"), (1, "per second"), (3600, "per hour"), (30, "per 30s"), (90, "per 1m30s")],
)
def test_a_window_reads_as_its_length(window: float, text: str) -> None:
    assert per_window(window) == text


def test_reset_headers_use_the_same_format() -> None:
    quota = Quota(10, 3, 119.7, 100, 0, 0.4)
    headers = quota.headers()
    assert headers["x-ratelimit-reset-requests"] == "2m0s"
    assert headers["x-ratelimit-reset-tokens"] == "400ms"


async def refused(limiter: LocalLimiter | RedisLimiter, **limits: int | None) -> RateLimitError:
    rpm, tpm = limits.get("rpm"), limits.get("tpm")
    with pytest.raises(RateLimitError) as caught:
        for _ in range(10):
            await limiter.admit("k", rpm, tpm)
            await limiter.spend("k", 10)
    return caught.value


@pytest.mark.parametrize(("window", "per"), [(60.0, "per minute"), (30.0, "per 30s")])
async def test_local_limit_messages_name_the_window(window: float, per: str) -> None:
    error = await refused(LocalLimiter(window), rpm=2)
    assert error.message.startswith(f"Rate limit reached: 2 requests {per} for this API key.")
    error = await refused(LocalLimiter(window), tpm=5)
    assert error.message.startswith(f"Rate limit reached: 5 tokens {per} for this API key.")


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.close()


@pytest.mark.parametrize(("window", "per"), [(60.0, "per minute"), (30.0, "per 30s")])
async def test_redis_limit_messages_name_the_window(
    redis: RedisServer, window: float, per: str
) -> None:
    limiter = RedisLimiter(redis.url, window_s=window, prefix=f"test-{window}")
    try:
        error = await refused(limiter, rpm=2)
        assert error.message.startswith(f"Rate limit reached: 2 requests {per} for this API key.")
        error = await refused(limiter, tpm=5)
        assert error.message.startswith(f"Rate limit reached: 5 tokens {per} for this API key.")
    finally:
        await limiter.close()
