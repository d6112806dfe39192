"""Secrets never reach the log: the redaction processor."""

from __future__ import annotations

import json
import logging
import sys

from structlog.testing import capture_logs

from appliance.runtime.logging import REDACTED, BoundOnce, Redactor, stdlib_formatter


def run(redactor: Redactor, **event: object) -> dict[str, object]:
    return dict(redactor(None, "info", dict(event)))


def test_configured_secret_is_replaced_anywhere_in_a_string() -> None:
    out = run(Redactor(["sk-live-123"]), event="calling with sk-live-123 now")
    assert out["event"] == f"calling with {REDACTED} now"


def test_secrets_inside_nested_structures_are_replaced() -> None:
    out = run(Redactor(["hunter2"]), detail={"headers": ["x", "Bearer hunter2"]})
    assert out["detail"] == {"headers": ["x", f"Bearer {REDACTED}"]}


def test_values_under_key_like_names_are_masked_whatever_they_are() -> None:
    out = run(Redactor([]), api_key="unknown-to-config", Authorization="Bearer x", model="m")
    assert out == {"api_key": REDACTED, "Authorization": REDACTED, "model": "m"}


def test_longer_secret_containing_a_shorter_one_is_replaced_whole() -> None:
    out = run(Redactor(["abc", "abcdef"]), event="key abcdef")
    assert out["event"] == f"key {REDACTED}"


def test_events_without_secrets_are_untouched() -> None:
    assert run(Redactor(["s3cret"]), event="request", status=200) == {
        "event": "request",
        "status": 200,
    }


def test_key_names_are_logged_under_a_field_that_is_not_masked() -> None:
    out = run(Redactor(["sk-team-a-value"]), event="request", key_name="team-a")
    assert out["key_name"] == "team-a"


def test_a_key_value_is_redacted_even_under_a_name_field() -> None:
    out = run(Redactor(["sk-team-a-value"]), key_name="sk-team-a-value", model="sk-team-a-value")
    assert out == {"key_name": REDACTED, "model": REDACTED}


def test_a_library_record_with_a_traceback_is_one_json_line() -> None:
    """Granian and asyncio log exceptions through the standard library: the traceback
    becomes a string field of the JSON line (it used to break the formatter)."""
    formatter = stdlib_formatter("json")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        record = logging.LogRecord(
            "_granian", logging.ERROR, __file__, 1, "worker failed", None, sys.exc_info()
        )
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["event"] == "worker failed"
    assert entry["level"] == "error"
    assert "ZeroDivisionError: division by zero" in entry["exception"]


def test_a_short_secret_is_replaced_where_it_stands_alone_not_inside_words() -> None:
    redact = Redactor(["adm"])
    event = redact(
        None,
        "info",
        {"event": "worker_readmitted", "model": "readmission", "header": "Bearer adm", "k": "adm"},
    )
    assert event == {
        "event": "worker_readmitted",
        "model": "readmission",
        "header": f"Bearer {REDACTED}",
        "k": REDACTED,
    }


def test_a_logger_bound_once_follows_every_reconfiguration() -> None:
    bound = BoundOnce("appliance.test")
    with capture_logs() as first:
        logger = bound.get()
        assert bound.get() is logger  # nothing changed: the same logger, not a new one
        logger.info("one")
    with capture_logs() as second:  # a new configuration: a new logger
        bound.get().info("two")
    assert [e["event"] for e in first] == ["one"]
    assert [e["event"] for e in second] == ["two"]
