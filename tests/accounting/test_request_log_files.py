"""The request log's pieces without a server: folding streams, the trace id filter, cutting,
retention across day files, and the writer's queue when it is full."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

import orjson
import pytest

from appliance.accounting.requestfiles import DayFiles, Summary, day_files
from appliance.accounting.requestlog import Capture, RequestLog, entry_of
from appliance.accounting.requestquery import Query, one, search
from appliance.cli import main
from appliance.wire.openai import assemble

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
DAY_S = 86_400.0


def capture(request_id: str, ts: float, **fields: object) -> Capture:
    summary: dict[str, object] = {
        "id": request_id,
        "ts": ts,
        "key": "alice",
        "model": "m",
        "served_by": "m",
        "route": "/v1/chat/completions",
        "status": 200,
        "latency_ms": 12.5,
        "input_tokens": 3,
        "output_tokens": 2,
        "trace_id": None,
        "stream": False,
    }
    rest: dict[str, object] = {
        "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        "reply": b'{"choices": [{"message": {"content": "hello"}}]}',
        "folded": None,
        "folded_cut": False,
        "redact": (),
        "max_bytes": 65_536,
    }
    for name, value in fields.items():
        (summary if name in Summary._fields else rest)[name] = value
    return Capture(Summary(**summary), **rest)  # type: ignore[arg-type]


def test_the_trace_id_tracing_noted_is_kept_and_filters(tmp_path: Path) -> None:
    now = time.time()
    files = DayFiles(tmp_path)
    files.write(
        [
            entry_of(capture("traced", now, trace_id=TRACE)),
            entry_of(capture("untraced", now + 1)),
        ]
    )
    files.close()
    found = search(tmp_path, Query.parse({"trace_id": TRACE.upper()}))
    assert [e["id"] for e in found] == ["traced"]
    assert found[0]["trace_id"] == TRACE
    assert [e["id"] for e in search(tmp_path, Query())] == ["untraced", "traced"]


def test_a_search_reads_every_day_file_in_range_newest_first(tmp_path: Path) -> None:
    now = time.time()
    files = DayFiles(tmp_path)
    files.write([entry_of(capture(f"day-{d}", now - d * DAY_S)) for d in range(4)])
    assert len(day_files(tmp_path)) == 4
    assert [e["id"] for e in search(tmp_path, Query())] == [f"day-{d}" for d in range(4)]
    recent = search(tmp_path, Query(since=now - 1.5 * DAY_S))
    assert [e["id"] for e in recent] == ["day-0", "day-1"]
    assert [e["id"] for e in search(tmp_path, Query(limit=3))] == ["day-0", "day-1", "day-2"]
    assert one(tmp_path, "day-3") is not None
    files.expire(now, retention_days=2)
    assert [e["id"] for e in search(tmp_path, Query())] == ["day-0", "day-1", "day-2"]
    assert one(tmp_path, "day-3") is None
    files.close()


def test_a_body_past_the_limit_is_cut_and_marked() -> None:
    long = {"messages": [{"role": "user", "content": "x" * 5000}]}
    entry = entry_of(capture("long", time.time(), request=long, max_bytes=1024))
    assert entry.truncated and entry.request is not None and len(entry.request) <= 1024
    short = entry_of(capture("short", time.time()))
    assert not short.truncated and orjson.loads(short.request or "") == capture("", 0).request


def test_redaction_reaches_every_string_at_any_depth() -> None:
    request = {"messages": [{"content": [{"type": "text", "text": "a 123-45-6789 b"}]}]}
    entry = entry_of(capture("ssn", time.time(), request=request, redact=(r"\d{3}-\d{2}-\d{4}",)))
    assert "123-45-6789" not in (entry.request or "")
    assert "a [redacted] b" in (entry.request or "")


def test_completions_and_native_responses_streams_fold() -> None:
    text = assemble.reply(
        [
            {"id": "c1", "choices": [{"index": 0, "text": "Hel"}]},
            {"id": "c1", "choices": [{"index": 0, "text": "lo", "finish_reason": "length"}]},
        ]
    )
    assert text["object"] == "text_completion"
    assert text["choices"] == [{"index": 0, "text": "Hello", "finish_reason": "length"}]
    final = {"id": "resp_1", "output": [], "status": "completed"}
    native = assemble.reply(
        [
            {"type": "response.output_text.delta", "delta": "Hi"},
            {"type": "response.completed", "response": final},
        ]
    )
    assert native == final
    cut = assemble.reply([{"type": "response.output_text.delta", "delta": "Hi"}])
    assert cut["output_text"] == "Hi"
    assert assemble.reply(["junk", {"choices": ["junk", {"delta": "x"}]}])["choices"]


def test_a_full_queue_drops_and_counts_without_waiting(tmp_path: Path) -> None:
    dropped: list[tuple[str, int]] = []
    log = RequestLog(tmp_path, 7, 2, lambda reason, n: dropped.append((reason, n)))
    for i in range(5):  # the writer is not started: nothing takes from the queue
        log.add(capture(f"q-{i}", time.time()))
    assert dropped == [("queue_full", 1)] * 3

    async def run() -> None:
        await log.start()
        await log.close()

    asyncio.run(run())
    assert log.written == 2
    assert {e["id"] for e in search(tmp_path, Query())} == {"q-0", "q-1"}


def test_check_refuses_a_log_folder_that_cannot_be_made(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = tmp_path / "cluster.yaml"
    config.write_text(
        "models: [{name: a, backend: scripted}]\n"
        f"capture: {{enabled: true, path: {blocker / 'requests'}}}\n"
    )
    assert main(["check", "-c", str(config)]) == 2
    assert f"capture.path: cannot create {blocker / 'requests'}: {blocker} is not a folder" in (
        capsys.readouterr().err
    )
    config.write_text(
        "models: [{name: a, backend: scripted}]\n"
        f"capture: {{enabled: true, path: {tmp_path / 'log' / 'requests'}}}\n"
    )
    assert main(["check", "-c", str(config)]) == 0
    assert not (tmp_path / "log").exists()  # check creates nothing


def test_the_folder_and_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    folder = tmp_path / "log" / "requests"
    before = os.umask(0o022)
    try:
        files = DayFiles(folder)
        files.write([entry_of(capture("private", time.time()))])
        [(_day, path)] = day_files(folder)
        made = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        assert all(p.exists() for p in made)  # WAL mode, a connection open: all three
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made} == {
            p.name: 0o600 for p in made
        }
        files.close()
    finally:
        os.umask(before)


def test_redaction_spares_object_keys_and_never_matches_empty() -> None:
    request = {"id": {"id": "id 7"}, "messages": [{"content": "my id"}]}
    entry = entry_of(capture("keys", time.time(), request=request, redact=(r"id", r"\b")))
    assert orjson.loads(entry.request or "") == {
        "id": {"id": "[redacted] 7"},
        "messages": [{"content": "my [redacted]"}],
    }


@pytest.mark.parametrize("pattern", ["", r"\d*", r"x?", r"\b", "^"])
def test_check_refuses_a_redact_pattern_that_matches_the_empty_string(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pattern: str
) -> None:
    config = tmp_path / "cluster.yaml"
    quoted = orjson.dumps(pattern).decode()
    config.write_text(
        "models: [{name: a, backend: scripted}]\n"
        f"capture: {{enabled: true, path: {tmp_path}, redact: [{quoted}]}}\n"
    )
    assert main(["check", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "capture.redact" in err and f"{pattern!r} matches the empty string" in err


def test_truncated_only_when_something_was_cut_and_a_cut_body_reads_as_text(
    tmp_path: Path,
) -> None:
    secret = "sk-" + "A" * 3000  # over the limit as sent, far under it once redacted
    shrunk = entry_of(
        capture(
            "shrunk",
            time.time(),
            request={"messages": [{"content": secret}]},
            redact=(r"sk-[A-Z]+",),
            max_bytes=1024,
        )
    )
    assert not shrunk.truncated
    cut = entry_of(
        capture("cut", time.time(), request={"messages": [{"content": "x" * 3000}]}, max_bytes=1024)
    )
    assert cut.truncated
    files = DayFiles(tmp_path)
    files.write([shrunk, cut])
    files.close()
    whole, part = one(tmp_path, "shrunk"), one(tmp_path, "cut")
    assert whole is not None and part is not None
    assert whole["request"] == {"messages": [{"content": "[redacted]"}]}
    assert whole["truncated"] is False
    assert isinstance(part["request"], str) and part["request"].startswith('{"messages"')
    assert len(part["request"].encode()) <= 1024 and part["truncated"] is True
    assert isinstance(part["reply"], dict)  # the reply was not cut: still an object
