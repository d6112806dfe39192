"""Secrets never reach the log: the redaction processor."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
import structlog
from structlog.testing import capture_logs

from appliance.config import LoggingConfig
from appliance.runtime.logging import BoundOnce, UtcStamp, configure_logging, stdlib_formatter
from appliance.runtime.redaction import REDACTED, Redactor, Secrets


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


@pytest.mark.parametrize("few", [True, False], ids=["few-short", "many-short"])
def test_secrets_are_found_where_the_redactor_would_replace_them(few: bool) -> None:
    """What the edge asks of a caller's request id: found as the redactor finds them."""
    others = [] if few else [f"s{n}x" for n in range(10)]  # past the few looked for by ``in``
    found = Secrets(["sk-long-secret-value", "adm", "", *others])
    for value in ("sk-long-secret-value", "req-sk-long-secret-value-1", "adm", "req.adm:1"):
        assert found.found_in(value), value
        assert run(Redactor(found), v=value)["v"] != value
    for value in ("readmitted", "req-adm-1", "sk-long-secret", "trace-0f3c", ""):
        assert not found.found_in(value), value
        assert run(Redactor(found), v=value)["v"] == value


def test_with_thousands_of_keys_every_one_is_found_and_replaced() -> None:
    """Thousands of keys are looked up by their beginnings, not each in turn: found at the
    start, inside and at the end of a string, two in one string, one inside a longer one
    (replaced whole), never a near miss; the same with a handful of keys."""
    many = [f"sk-team-{n:05d}-0123456789" for n in range(3000)]
    outer = "sk-team-00042-0123456789-and-more"  # holds another key whole
    for keys in (many, many[:3]):
        found = Secrets([*keys, outer])
        redactor = Redactor(found)
        first, last = keys[0], keys[-1]
        for value, left in (
            (first, REDACTED),
            (f"id:{last}", f"id:{REDACTED}"),
            (f"{first}/{last}!", f"{REDACTED}/{REDACTED}!"),
            (f"x{outer}x", f"x{REDACTED}x"),
        ):
            assert found.found_in(value), value
            assert run(redactor, v=value)["v"] == left
        for value in ("sk-team-0000", first[:-1], first.upper(), "sk-team-99999-0123456789"):
            assert not found.found_in(value), value
            assert run(redactor, v=value)["v"] == value


def test_secrets_only_grow() -> None:
    found = Secrets(["sk-before-the-reload"])
    found.add(["sk-after-the-reload", "new"])
    assert set(found) == {"sk-before-the-reload", "sk-after-the-reload", "new"}
    assert found.found_in("x-sk-before-the-reload") and found.found_in("new:1")


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


def test_a_secret_is_replaced_on_every_line_not_only_the_first() -> None:
    """The redactor remembers what it made of a string: the remembered answer is the
    redacted one, and a name's masking is remembered as well."""
    redact = Redactor(["sk-live-123456789", "adm"])
    for _ in range(3):
        out = run(redact, path="/v1/sk-live-123456789", model="adm", token=5, n=1, ok=True)
        assert out == {
            "path": f"/v1/{REDACTED}",
            "model": REDACTED,
            "token": REDACTED,
            "n": 1,
            "ok": True,
        }


def test_the_redactor_forgets_rather_than_grows_without_bound() -> None:
    redact = Redactor(["sk-live-123456789"])
    for i in range(10_000):
        run(redact, **{f"field{i}": f"value {i} sk-live-123456789"})
    assert len(redact._names) <= 4096 and len(redact._strings) <= 4096
    assert len(redact._once) <= 4096
    assert run(redact, field1="sk-live-123456789") == {"field1": REDACTED}


def test_the_timestamp_is_structlogs_iso_utc_format(monkeypatch: pytest.MonkeyPatch) -> None:
    stamp = UtcStamp("ts")
    ours = stamp(None, "info", {})["ts"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", ours)
    for ns in (1_765_000_000_000_000_000, 1_765_000_000_000_001_999, 1_765_000_061_250_000_000):
        monkeypatch.setattr("time.time_ns", lambda ns=ns: ns)
        when = datetime.fromtimestamp(ns // 1000 / 1e6, tz=UTC)
        assert stamp(None, "info", {})["ts"] == when.isoformat().replace("+00:00", "Z")


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """structlog's configuration and the root level as they were before the test."""
    saved, level = structlog.get_config(), logging.getLogger().level
    yield
    structlog.configure(**saved)
    logging.getLogger().setLevel(level)


@pytest.mark.usefixtures("logging_restored")
def test_a_hot_path_line_is_the_line_structlog_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """BoundOnce.info writes under the JSON configuration what get().info writes."""
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": out})())
    configure_logging(LoggingConfig(format="json"), ["sk-live-123456789"])
    monkeypatch.setattr("time.time_ns", lambda: 1_765_000_000_123_456_000)
    bound = BoundOnce("appliance.test")
    fields = {"path": "/v1/sk-live-123456789", "status": 200, "nested": {"api_key": "x"}}
    structlog.contextvars.bind_contextvars(request_id="req_1")
    try:
        bound.get().info("request", **fields)
        bound.info("request", dict(fields))
    finally:
        structlog.contextvars.unbind_contextvars("request_id")
    first, second = out.getvalue().splitlines()
    assert first == second
    assert orjson.loads(first) == {
        "path": f"/v1/{REDACTED}",
        "status": 200,
        "nested": {"api_key": REDACTED},
        "event": "request",
        "request_id": "req_1",
        "level": "info",
        "ts": "2025-12-06T05:46:40.123456Z",
    }
    configure_logging(LoggingConfig(format="json", level="warning"), [])
    bound.info("request", {"dropped": True})  # below the level: nothing
    assert len(out.getvalue().splitlines()) == 2


def test_a_hot_path_line_goes_through_any_other_configuration() -> None:
    bound = BoundOnce("appliance.test")
    with capture_logs() as logs:
        bound.info("request", {"status": 200})
    assert logs == [{"event": "request", "status": 200, "log_level": "info"}]


@pytest.mark.usefixtures("logging_restored")
def test_a_hot_path_line_follows_capture_logs_entered_after_it_was_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """capture_logs changes structlog's processor list in place: a line written the
    direct way before it must not keep writing past the capture."""
    out = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": out})())
    configure_logging(LoggingConfig(format="json"), [])
    bound = BoundOnce("appliance.test")
    bound.info("request", {"n": 1})
    with capture_logs() as logs:
        bound.info("request", {"n": 2})
    assert logs == [{"event": "request", "n": 2, "log_level": "info"}]
    assert len(out.getvalue().splitlines()) == 1
