"""The request log on the real server: what is captured, redacted and kept, and the admin API.

One server captures model ``kept`` (and its alias) for key ``alice`` only, with a
redaction pattern, into a folder that holds old day files before it starts; another is
configured as most are (a usage ledger, no ``capture:``) and must capture nothing. Requests
go through the real openai client; the log is read back through ``/admin/requests``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer, ledger_rows

ADMIN = "admin-secret"
SECRET = "sk-live-ABCDEFGHIJKLMNOPQRSTUV"
REPLY = ["Hello", " world", f" {SECRET}"]


def _day(days_ago: int) -> str:
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)).isoformat()


def _day_file(folder: Path, days_ago: int) -> Path:
    """An existing day file of ``days_ago`` days before today (with one row)."""
    path = folder / f"requests-{_day(days_ago)}.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE requests (id TEXT)")
        conn.execute("INSERT INTO requests VALUES ('old')")
    conn.close()
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("requests")


@pytest.fixture(scope="module")
def old_files(folder: Path) -> dict[str, Path]:
    return {"expired": _day_file(folder, 9), "kept": _day_file(folder, 6)}


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer],
    upstream: FakeUpstream,
    folder: Path,
    old_files: dict[str, Path],
) -> RunningServer:
    return start_server(
        cluster_config(
            scripted("kept", REPLY),
            scripted("other", ["not kept"]),
            {
                "name": "tools",
                "backend": "openai",
                "options": {"base_url": upstream.base_url, "model": "ok+toolcall"},
                "health": {"interval_s": 0},
            },
            routes=[{"alias": "kept-alias", "targets": ["kept"]}],
            auth={
                "api_keys": [
                    {"name": "alice", "key": "k-alice"},
                    {"name": "bob", "key": "k-bob"},
                ]
            },
            server={"admin_key": ADMIN},
            capture={
                "enabled": True,
                "models": ["kept", "tools"],
                "keys": ["alice"],
                "path": str(folder),
                "retention_days": 7,
                "redact": [r"sk-live-[A-Za-z0-9]{10,}"],
            },
        )
    )


def client(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=key, max_retries=0)


def admin(server: RunningServer, path: str, **params: Any) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/admin/{path}",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )


def captured(server: RunningServer, request_id: str) -> dict[str, Any]:
    """The logged request ``request_id``, once the writer has written it."""
    response = until(
        lambda: admin(server, f"requests/{request_id}"),
        accept=lambda r: r.status_code == 200,
        what=f"request {request_id} in the log",
    )
    body: dict[str, Any] = response.json()
    return body


def chat(server: RunningServer, key: str, model: str, request_id: str, **extra: Any) -> Any:
    return client(server, key).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": f"my key is {SECRET}, say hello"}],
        extra_headers={"x-request-id": request_id},
        **extra,
    )


def test_plain_chat_is_captured_with_its_reply_tokens_and_latency(server: RunningServer) -> None:
    reply = chat(server, "k-alice", "kept", "plain-1")
    assert reply.choices[0].message.content == f"Hello world {SECRET}"  # the client's is whole
    entry = captured(server, "plain-1")
    assert entry["key"] == "alice" and entry["model"] == "kept" and entry["served_by"] == "kept"
    assert entry["status"] == 200 and entry["route"] == "/v1/chat/completions"
    assert entry["stream"] is False and entry["truncated"] is False
    assert entry["input_tokens"] == reply.usage.prompt_tokens
    assert entry["output_tokens"] == reply.usage.completion_tokens
    assert entry["latency_ms"] > 0 and entry["trace_id"] is None  # tracing is off
    assert entry["request"]["messages"][0]["content"] == "my key is [redacted], say hello"
    assert entry["reply"]["choices"][0]["message"]["content"] == "Hello world [redacted]"


def test_streamed_chat_is_captured_as_the_reply_the_client_assembled(
    server: RunningServer,
) -> None:
    stream = chat(server, "k-alice", "kept-alias", "stream-1", stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == f"Hello world {SECRET}"
    entry = captured(server, "stream-1")
    assert entry["stream"] is True and entry["model"] == "kept-alias"
    assert entry["served_by"] == "kept"
    choice = entry["reply"]["choices"][0]
    assert choice["message"]["content"] == "Hello world [redacted]"
    assert choice["finish_reason"] == "stop"
    assert entry["output_tokens"] > 0 and entry["request"]["stream"] is True


def test_streamed_tool_call_is_captured_with_its_arguments_joined(server: RunningServer) -> None:
    stream = client(server, "k-alice").chat.completions.create(
        model="tools",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
        stream=True,
        extra_headers={"x-request-id": "tools-1"},
    )
    assert [c for c in stream]
    choice = captured(server, "tools-1")["reply"]["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    [call] = choice["message"]["tool_calls"]
    assert call["id"] == "call_fake1"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


def test_only_the_chosen_model_and_key_are_captured(server: RunningServer) -> None:
    chat(server, "k-bob", "kept", "bob-kept")  # a key not chosen
    chat(server, "k-alice", "other", "alice-other")  # a model not chosen
    chat(server, "k-alice", "kept", "after-both")
    captured(server, "after-both")  # written in order: the two before would be there by now
    for unseen in ("bob-kept", "alice-other"):
        missing = admin(server, f"requests/{unseen}")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "request_not_found"
    listed = admin(server, "requests", limit=1000).json()["data"]
    assert {e["key"] for e in listed} == {"alice"}
    assert "other" not in {e["model"] for e in listed}


def test_the_secret_never_reaches_the_files(server: RunningServer, folder: Path) -> None:
    chat(server, "k-alice", "kept", "secret-1")
    chat(server, "k-alice", "kept", "secret-2", stream=True).close()
    captured(server, "secret-1")
    captured(server, "secret-2")
    files = list(folder.iterdir())
    assert any(f.name.endswith(".sqlite") for f in files)
    assert all(SECRET.encode() not in f.read_bytes() for f in files if f.is_file())
    assert any(b"[redacted]" in f.read_bytes() for f in files if f.is_file())


def test_retention_deleted_the_old_day_file_and_kept_the_recent_one(
    server: RunningServer, old_files: dict[str, Path]
) -> None:
    until(lambda: not old_files["expired"].exists(), what="the 9-day-old file deleted")
    assert old_files["kept"].exists()


def test_list_filters_newest_first(server: RunningServer) -> None:
    chat(server, "k-alice", "kept-alias", "filter-alias")  # its own, whatever ran before
    captured(server, "filter-alias")
    for i in range(3):
        chat(server, "k-alice", "kept", f"filter-{i}")
    captured(server, "filter-2")
    newest = admin(server, "requests", key="alice", model="kept", status=200, limit=2)
    assert newest.status_code == 200
    ids = [e["id"] for e in newest.json()["data"]]
    assert ids == ["filter-2", "filter-1"]
    summary = newest.json()["data"][0]
    assert "request" not in summary and "reply" not in summary  # summaries only
    assert summary["input_tokens"] > 0 and summary["latency_ms"] > 0
    by_served = admin(server, "requests", model="kept", limit=1000).json()["data"]
    assert "filter-alias" in {e["id"] for e in by_served}  # asked for the alias, served by kept
    since = admin(server, "requests", since=str(summary["ts"])).json()["data"]
    assert [e["id"] for e in since] == ["filter-2"]
    assert admin(server, "requests", until="2000-01-01").json()["data"] == []
    assert admin(server, "requests", status=500).json()["data"] == []
    assert admin(server, "requests", key="bob").json()["data"] == []
    assert admin(server, "requests", trace_id="0" * 32).json()["data"] == []
    today = admin(server, "requests", since=_day(0), until=_day(0), limit=1000).json()["data"]
    assert {"filter-0", "filter-1", "filter-2"} <= {e["id"] for e in today}
    for no_end in ("1e12", "99999999999999999999", "9999-12-31", "9999-12-31T23:59:59-14:00"):
        ever = admin(server, "requests", since=_day(0), until=no_end, limit=1000)
        assert ever.status_code == 200, ever.text  # an end past the last day: no end
        assert {"filter-0", "filter-1", "filter-2"} <= {e["id"] for e in ever.json()["data"]}


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("status", "ok"),
        ("status", "42"),
        ("since", "last tuesday"),
        ("until", "nan"),
        ("since", "1e12"),
        ("since", "99999999999999999999"),
        ("since", "253402300800"),
        ("since", "9999-12-31T23:59:59-14:00"),
        ("since", "-1e12"),
        ("until", "-1e12"),
        ("trace_id", "not-a-trace"),
        ("limit", "0"),
        ("limit", "5000"),
        ("colour", "blue"),
    ],
)
def test_bad_filters_are_400_naming_the_parameter(
    server: RunningServer, param: str, value: str
) -> None:
    response = admin(server, "requests", **{param: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "query", ["key=alice&key=bob", "limit=1&limit=2", "since=2026-01-01&since=2026-02-01"]
)
def test_a_filter_given_twice_is_400_naming_it(server: RunningServer, query: str) -> None:
    response = httpx.get(
        f"{server.base_url}/admin/requests?{query}",
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == query.split("=")[0] and "given 2 times" in error["message"]


def test_the_log_needs_the_admin_key(server: RunningServer) -> None:
    for path in ("requests", "requests/plain-1"):
        url = f"{server.base_url}/admin/{path}"
        assert httpx.get(url, timeout=10).status_code == 401
        refused = httpx.get(url, headers={"Authorization": "Bearer k-alice"}, timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "invalid_request_error"


def test_capture_is_off_by_default(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> None:
    ledger = tmp_path_factory.mktemp("ledger") / "usage.sqlite"
    plain = start_server(cluster_config(scripted("kept", REPLY), state={"usage_path": str(ledger)}))
    chat(plain, "none", "kept", "default-1")
    chat(plain, "none", "kept", "default-2", stream=True).close()
    query = "SELECT count(*) FROM requests WHERE request_id LIKE 'default-%'"
    until(lambda: ledger_rows(ledger, query) == [(2,)], what="both requests in the ledger")
    assert [p.name for p in ledger.parent.iterdir() if "requests" in p.name] == []
    # No admin key on this server: the admin API is refused outright.
    refused = httpx.get(f"{plain.base_url}/admin/requests", timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_disabled"


def test_messages_and_responses_streams_are_captured_as_the_model_answered(
    server: RunningServer,
) -> None:
    import anthropic

    messages = anthropic.Anthropic(base_url=server.base_url, api_key="k-alice", max_retries=0)
    with messages.messages.stream(
        model="kept",
        max_tokens=50,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-request-id": "messages-1"},
    ) as stream:
        assert stream.get_final_text() == f"Hello world {SECRET}"
    responses = client(server, "k-alice").responses.create(
        model="kept", input="hello", stream=True, extra_headers={"x-request-id": "responses-1"}
    )
    assert [event.type for event in responses][-1] == "response.completed"
    for request_id, route in (("messages-1", "/v1/messages"), ("responses-1", "/v1/responses")):
        entry = captured(server, request_id)
        assert entry["route"] == route and entry["stream"] is True
        content = entry["reply"]["choices"][0]["message"]["content"]
        assert content == "Hello world [redacted]"
        assert entry["request"]["messages"][-1]["content"] == "hello"  # the chat request
