"""What an upstream says of its failure: its Retry-After, in every form servers write."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from appliance.backends.upstream_errors import MAX_RETRY_AFTER_S, retry_after_of


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("0.5", 0.5),
        ("-5", 0.0),  # a wait in the past: none
        ("999999999999", MAX_RETRY_AFTER_S),  # clamped: a client is not told to wait years
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # a date gone by
    ],
)
def test_retry_after_as_seconds_or_a_date_is_a_wait_within_bounds(
    header: str, seconds: float
) -> None:
    assert retry_after_of(header) == seconds


def test_retry_after_as_an_http_date_ahead_is_the_seconds_until_then() -> None:
    found = retry_after_of(formatdate(time.time() + 30, usegmt=True))
    assert found is not None and 25 <= found <= 31


@pytest.mark.parametrize("header", [None, "", "soon", "nan", "inf", "-inf", "Mon, 99 Foo"])
def test_a_retry_after_that_says_nothing_readable_is_none(header: str | None) -> None:
    assert retry_after_of(header) is None
