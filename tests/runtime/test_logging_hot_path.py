"""The access line's cheaper chain writes what structlog's stock chain writes, secrets
redacted as before: the context merge, the time written after the redactor, the
redactor remembering only repeated strings."""

from __future__ import annotations

import asyncio
import contextvars
import io
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import structlog

from appliance.config import LoggingConfig
from appliance.runtime import logging as logging_module
from appliance.runtime.logging import BoundOnce, ContextMerge, UtcStamp, configure_logging
from appliance.runtime.redaction import REDACTED, Redactor

SECRETS = ["sk-live-123456789", "adm"]
NOW_NS = 1_765_000_000_123_456_000


@pytest.fixture
def out(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.BytesIO]:
    """The JSON configuration writing into a buffer at a fixed time; structlog's
    configuration and the context as they were, after."""
    saved = structlog.get_config()
    buffer = io.BytesIO()
    monkeypatch.setattr(sys, "stdout", type("Out", (), {"buffer": buffer})())
    configure_logging(LoggingConfig(format="json"), SECRETS)
    monkeypatch.setattr("time.time_ns", lambda: NOW_NS)
    structlog.contextvars.clear_contextvars()
    yield buffer
    structlog.contextvars.clear_contextvars()
    structlog.configure(**saved)


def stock_line(method: str, event: str, fields: dict[str, Any]) -> bytes:
    """The line structlog's own processors make: the chain as it was before it was made
    cheaper (merge_contextvars, level, time, format_exc_info, redactor, JSON)."""
    chain: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        UtcStamp("ts"),
        structlog.processors.format_exc_info,
        Redactor(SECRETS),
        structlog.processors.JSONRenderer(serializer=orjson.dumps),
    ]
    line: Any = {**fields, "event": event}
    for processor in chain:
        line = processor(None, method, line)
    assert isinstance(line, bytes)
    return line


def boom() -> BaseException:
    try:
        raise ValueError("failed with sk-live-123456789")
    except ValueError as error:
        return error


LINES: list[tuple[str, dict[str, Any]]] = [
    ("request", {"method": "POST", "path": "/v1/x", "status": 200, "duration_ms": 0.5}),
    ("request", {"path": "/v1/sk-live-123456789/adm", "nested": {"api_key": "x", "l": ["adm"]}}),
    ("request", {"ts": "a caller's time", "request_id": "a field wins over the context"}),
    ("sink_failed", {"sink": "counting", "exc_info": boom()}),
    ("request", {"token": 5, "Authorization": None, "admitted": "readmitted adm"}),
]


@pytest.mark.parametrize(("event", "fields"), LINES)
def test_each_line_is_byte_for_byte_the_stock_chains(
    out: io.BytesIO, event: str, fields: dict[str, Any]
) -> None:
    """The direct path and structlog's own (get().info), both on the configured chain,
    write exactly what the stock processors write: same fields, order and values, the
    exception's text redacted and the time still before it."""
    structlog.contextvars.bind_contextvars(request_id="req_sk-live-123456789")
    bound = BoundOnce("appliance.test")
    bound.get().info(event, **fields)
    bound.info(event, dict(fields))
    expected = stock_line("info", event, fields)
    assert out.getvalue().splitlines() == [expected, expected]
    line = orjson.loads(expected)
    assert "sk-live-123456789" not in expected.decode()
    if "request_id" not in fields:
        assert line["request_id"] == f"req_{REDACTED}"
    if "exc_info" in fields:
        assert list(line)[-2:] == ["ts", "exception"]


def test_a_secret_in_a_fresh_string_is_redacted_on_every_line(out: io.BytesIO) -> None:
    """Request ids and paths are new on each line (never remembered) or repeat (then
    remembered): either way the secret is replaced, the first time and every time."""
    bound = BoundOnce("appliance.test")
    for i in range(3 * 4096 // 2):
        tokens = structlog.contextvars.bind_contextvars(request_id=f"r{i}-sk-live-123456789")
        try:
            bound.info("request", {"path": f"/v1/{i % 3}/adm", "nested": [f"x{i} adm"]})
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 * 4096 // 2
    for i, raw in enumerate(lines):
        line = orjson.loads(raw)
        assert line["request_id"] == f"r{i}-{REDACTED}"
        assert line["path"] == f"/v1/{i % 3}/{REDACTED}"
        assert line["nested"] == [f"x{i} {REDACTED}"]


def test_one_off_strings_are_never_remembered_and_repeated_ones_are() -> None:
    redact = Redactor(SECRETS)
    for i in range(10_000):
        assert redact(None, "info", {"id": f"one-off {i} adm"}) == {"id": f"one-off {i} {REDACTED}"}
    assert redact._strings == {}  # nothing a one-off string churns
    assert len(redact._once) <= 4096  # only noted as seen, within a bound
    for _ in range(3):
        assert redact(None, "info", {"path": "/v1/adm"}) == {"path": f"/v1/{REDACTED}"}
    assert redact._strings == {"/v1/adm": f"/v1/{REDACTED}"}  # seen twice: remembered


def test_many_short_secrets_are_still_found_as_whole_words() -> None:
    """Past a few short secrets the whole-word pattern runs on every string, not after
    a look for each: the same answers."""
    secrets = [f"s{i}x" for i in range(20)]
    redact = Redactor(secrets)
    assert redact(None, "info", {"a": "with s7x here", "b": "as7x s19x", "c": "none"}) == {
        "a": f"with {REDACTED} here",
        "b": f"as7x {REDACTED}",
        "c": "none",
    }


def merged(processor: Any, event: dict[str, Any]) -> list[tuple[str, Any]]:
    return list(processor(None, "info", dict(event)).items())


def same_as_structlog(event: dict[str, Any] | None = None) -> None:
    event = {"event": "x"} if event is None else event
    ours = merged(ContextMerge(), event)
    assert ours == merged(structlog.contextvars.merge_contextvars, event)


@pytest.mark.parametrize("registry", ["structlog's", "none (a structlog without it)"])
def test_the_context_merge_is_structlogs_for_bound_unbound_and_reset_variables(
    registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if registry.startswith("none"):
        monkeypatch.setattr(logging_module, "_CONTEXT_VARS", None)

    def scenario() -> None:
        same_as_structlog()  # nothing bound
        first = structlog.contextvars.bind_contextvars(request_id="r1")
        same_as_structlog()
        same_as_structlog({"event": "x", "request_id": "the line's own"})  # the line wins
        second = structlog.contextvars.bind_contextvars(peer="p", third=3)
        same_as_structlog()  # several: in the context's order
        same_as_structlog({"peer": "mine", "event": "x"})
        structlog.contextvars.unbind_contextvars("peer")  # set to ... (unbound)
        same_as_structlog()
        structlog.contextvars.reset_contextvars(**second)  # back to never set
        same_as_structlog()
        structlog.contextvars.reset_contextvars(**first)
        same_as_structlog()
        structlog.contextvars.bind_contextvars(request_id="r2")
        structlog.contextvars.clear_contextvars()  # every one set to ...
        same_as_structlog()

    contextvars.Context().run(scenario)  # a context of its own: nothing leaks out


def test_the_context_merge_sees_each_tasks_own_context() -> None:
    merge = ContextMerge()

    async def request(n: int) -> dict[str, Any]:
        structlog.contextvars.bind_contextvars(request_id=f"r{n}")
        await asyncio.sleep(0)
        return dict(merge(None, "info", {"event": "request"}))

    async def both() -> list[dict[str, Any]]:
        return list(await asyncio.gather(request(1), request(2)))

    lines = contextvars.Context().run(asyncio.run, both())
    assert lines == [
        {"event": "request", "request_id": "r1"},
        {"event": "request", "request_id": "r2"},
    ]
    assert merge(None, "info", {"event": "after"}) == {"event": "after"}
