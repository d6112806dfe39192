"""README promises that no other test held, each through the real server.

- Configuration: ``$$`` is a literal ``$``; ``-c FILE`` and relative paths inside the file
  are relative to the current folder, not to the file.
- Hot reload: ``appliance reload`` validates the file, then signals the server; a save
  that leaves the content as it was is ignored.
- Dispatch and failover: at most ``retries + 1`` attempts (default 3), on other workers,
  then the route's next target, within the model's ``timeout_s``.
- Health: with probes off, a cool-down that doubles with each ejection (up to
  ``max_cooldown_s``) brings a worker back.
- Scaling out: ``state.on_error: closed`` answers 503 ``limiter_unavailable`` while Redis
  cannot be reached.
- Responses: a route alias passes through only if every target does.
- Budgets: ``week`` (from Monday) and ``month`` periods, the sum of their UTC days.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.conftest import cluster_config, scripted
from tests.local.models import SMOLLM2
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer, WatchWitness, free_port, ledger_rows

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def appliance(
    *args: object, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The ``appliance`` command, as a user runs it (``python -m appliance``)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    return subprocess.run(
        [sys.executable, "-m", "appliance", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
        timeout=60,
        check=False,
    )


def chat(server: RunningServer, model: str, key: str | None = None, **extra: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": MESSAGES, **extra}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=60
    )


def model_ids(server: RunningServer) -> list[str]:
    response = httpx.get(f"{server.base_url}/v1/models", timeout=10)
    return [m["id"] for m in response.json()["data"]]


# Configuration --------------------------------------------------------------------------


def test_double_dollar_is_a_literal_dollar(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    """``$$`` is a literal ``$``, also right before what would be a ``${VAR}``."""
    path = tmp_path / "dollars.yaml"
    path.write_text(
        "auth:\n"
        "  api_keys:\n"
        '    - {name: dollar, key: "pa$$word-${PROMISE_SUFFIX}"}\n'
        "models:\n"
        "  - name: dollars\n"
        "    backend: scripted\n"
        '    options: {reply: ["costs $$5, not $${PROMISE_SUFFIX}"]}\n'
    )
    server = start_server(path, env={"PROMISE_SUFFIX": "xyz"})
    response = chat(server, "dollars", key="pa$word-xyz")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "costs $5, not ${PROMISE_SUFFIX}"
    assert chat(server, "dollars", key="pa$$word-xyz").status_code == 401


def _gguf() -> Path:
    spec = find_spec(SMOLLM2["package"])
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2["file"]


def test_config_and_paths_inside_it_are_relative_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_server: Callable[..., RunningServer]
) -> None:
    """``-c FILE`` and ``state.usage_path``, ``model: {path: ...}`` are read from the
    current folder, not from the file's: the file lives in ``there``, the server runs in
    ``here``, where the ledger and the model file are."""
    here, there = tmp_path / "here", tmp_path / "there"
    (here / "models").mkdir(parents=True)
    there.mkdir()
    (here / "models" / "smol.gguf").symlink_to(_gguf())
    admin = "relative-admin"
    config = cluster_config(
        scripted("echo"),
        {
            "name": "smol",
            "backend": "llama_cpp",
            "load": "on_demand",
            "options": {"model": {"path": "models/smol.gguf"}, "n_ctx": 512, "n_threads": 1},
        },
        state={"usage_path": "ledger/usage.sqlite"},
        server={"admin_key": admin},
    )
    (there / "cluster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(here)
    server = start_server(Path("../there/cluster.yaml"))
    assert chat(server, "echo").status_code == 200
    ledger = here / "ledger" / "usage.sqlite"
    until(
        lambda: ledger_rows(ledger, "SELECT model FROM requests") == [("echo",)],
        what="the request's row in ./ledger/usage.sqlite",
    )
    assert not (there / "ledger").exists()
    loaded = httpx.post(
        f"{server.base_url}/admin/load",
        json={"model": "smol"},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=180,
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "loaded"


# Hot reload -----------------------------------------------------------------------------


def _scripted_config(*names: str, watch: bool) -> str:
    models = [scripted(name, [f"from {name}"]) for name in names]
    return yaml.safe_dump(cluster_config(*models, server={"watch_config": watch}))


def test_appliance_reload_validates_the_file_then_signals_the_server(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(_scripted_config("first", watch=False))
    server = start_server(path)
    pid_file = Path(tempfile.gettempdir()) / f"appliance-{server.port}.pid"
    assert pid_file.read_text().strip() == str(server.process.pid)

    path.write_text(_scripted_config("first", watch=False).replace("workers: 1", "wrokers: 1"))
    path.write_text(
        path.read_text().replace("backend: scripted", "backend: scripted\n  colour: red", 1)
    )
    refused = appliance("reload", "-c", path, "--pid-file", pid_file)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "unknown key 'colour'" in refused.stderr

    gone = tmp_path / "gone.pid"
    gone.write_text("not a pid")
    path.write_text(_scripted_config("first", "second", watch=False))
    assert appliance("reload", "-c", path, "--pid-file", gone).returncode == 1

    # No --pid-file: the default one of the port (here from APPLIANCE_PORT, as serve had it
    # from --port).
    done = appliance("reload", "-c", path, APPLIANCE_PORT=str(server.port))
    assert done.returncode == 0, done.stderr
    assert f"reload signalled to PID {server.process.pid}" in done.stdout
    until(lambda: model_ids(server) == ["first", "second"], what="the reloaded models")
    assert [e["reason"] for e in server.events("config_reloaded")] == ["sighup"]
    assert server.event_count("config_reload_failed") == 0, "the invalid file never reached it"


def test_a_save_that_leaves_the_content_as_it_was_is_ignored(
    tmp_path: Path, start_server: Callable[..., RunningServer]
) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "cluster.yaml"
    text = _scripted_config("first", watch=True)
    path.write_text(text)
    server = start_server(path)
    witness = WatchWitness(folder, tmp_path / "witness")
    try:
        until(lambda: server.event_count("config_watch_started") == 1, what="watching")
        path.write_text(text)  # saved in place, same bytes
        replacement = folder / ".cluster.yaml.swp"
        replacement.write_text(text)
        replacement.rename(path)  # as editors save: a new file renamed over it
        witness.see_a_change()
        assert server.event_count("config_reloaded") == 0
        assert model_ids(server) == ["first"]
    finally:
        witness.stop()
    path.write_text(_scripted_config("first", "second", watch=True))
    until(lambda: model_ids(server) == ["first", "second"], what="a real change reloaded")
    assert [e["reason"] for e in server.events("config_reloaded")] == ["file_changed"]


# Dispatch and failover ------------------------------------------------------------------


def failing(
    name: str, upstream: FakeUpstream, served: str, workers: int, **fields: Any
) -> dict[str, Any]:
    """An ``openai`` model with ``workers`` workers on the fake, each under its own base
    (``<name>-<i>``), probes off and never ejected by its failures."""
    urls = [upstream.url(f"{name}-{i}") for i in range(workers)]
    return {
        "name": name,
        "backend": "openai",
        "health": {"interval_s": 0, "failures": 1000},
        "options": {"base_url": urls, "model": served, **fields.pop("options", {})},
        **fields,
    }


@pytest.fixture(scope="module")
def dispatch(upstream: FakeUpstream, start_server: Callable[..., RunningServer]) -> RunningServer:
    """Each test asks its own models."""
    return start_server(
        cluster_config(
            failing("retries-2", upstream, "fail-500", 5, retries=2),
            failing("retries-0", upstream, "fail-500", 5, retries=0),
            failing("retries-default", upstream, "fail-500", 5),
            failing("route-first", upstream, "fail-500", 2, retries=2),
            failing("route-second", upstream, "fail-500", 2),
            failing(
                "deadline",
                upstream,
                "hang",
                6,
                retries=5,
                timeout_s=1.2,
                options={"first_byte_timeout_s": 0.5},
            ),
            failing(
                "cooling",
                upstream,
                "fail-500",
                1,
                retries=0,
                health={"interval_s": 0, "failures": 1, "cooldown_s": 0.2, "max_cooldown_s": 0.5},
            ),
            failing(
                "cooling-long",
                upstream,
                "fail-500",
                1,
                retries=0,
                health={"interval_s": 0, "failures": 1, "cooldown_s": 60},
            ),
            routes=[{"alias": "failing-route", "targets": ["route-first", "route-second"]}],
        )
    )


def attempts(upstream: FakeUpstream, model: str) -> list[str]:
    """The workers (bases) of ``model`` that requests reached, in order."""
    return [s.base for s in upstream.requests if s.base.rpartition("-")[0] == model]


@pytest.mark.parametrize(
    ("model", "tries"), [("retries-2", 3), ("retries-0", 1), ("retries-default", 3)]
)
def test_a_failing_request_makes_at_most_retries_plus_one_attempts(
    dispatch: RunningServer, upstream: FakeUpstream, model: str, tries: int
) -> None:
    """Five workers, all failing: ``retries + 1`` of them are tried, each once."""
    response = chat(dispatch, model)
    assert response.status_code == 502, response.text
    assert response.json()["error"]["code"] == "upstream_error"
    seen = attempts(upstream, model)
    assert len(seen) == tries, seen
    assert len(set(seen)) == tries, "each attempt on another worker"


def test_attempts_go_to_the_models_other_workers_then_the_routes_next_target(
    dispatch: RunningServer, upstream: FakeUpstream
) -> None:
    """The alias counts the first target's ``retries: 2``: both of its workers, then one
    of the next target's."""
    response = chat(dispatch, "failing-route")
    assert response.status_code == 502, response.text
    first, second = attempts(upstream, "route-first"), attempts(upstream, "route-second")
    assert sorted(first) == ["route-first-0", "route-first-1"]
    assert len(second) == 1


def test_attempts_stop_at_the_models_timeout(
    dispatch: RunningServer, upstream: FakeUpstream
) -> None:
    """``retries: 5`` over six hanging workers, each attempt cut at 0.5 s (no first byte),
    the request at ``timeout_s: 1.2``: a 504, after at most three attempts (a timeout
    never fires early), not six."""
    response = chat(dispatch, "deadline")
    assert response.status_code == 504, response.text
    assert response.json()["error"]["code"] == "upstream_timeout"
    seen = until(lambda: attempts(upstream, "deadline"), what="the first attempt recorded")
    assert 1 <= len(seen) <= 3 < 5 + 1, seen


def test_an_ejected_worker_gets_no_requests_until_its_cool_down_is_over(
    dispatch: RunningServer, upstream: FakeUpstream
) -> None:
    """``cooldown_s: 60``: the request after the ejecting one is a 503, never sent."""
    assert chat(dispatch, "cooling-long").status_code == 502
    response = chat(dispatch, "cooling-long")
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert "retry-after" in response.headers
    assert len(attempts(upstream, "cooling-long")) == 1


def _ts(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00"))


def test_without_probes_the_cool_down_doubles_with_each_ejection(
    dispatch: RunningServer, upstream: FakeUpstream
) -> None:
    """``failures: 1``, ``cooldown_s: 0.2``, ``max_cooldown_s: 0.5``, probes off: each
    failure ejects the worker, each readmission comes on its own after 0.2, 0.4, then
    0.5 s (capped)."""

    def ejections() -> list[dict[str, Any]]:
        return [e for e in dispatch.events("worker_ejected") if e["worker"] == "cooling/0"]

    def readmissions() -> list[dict[str, Any]]:
        return [e for e in dispatch.events("worker_readmitted") if e["worker"] == "cooling/0"]

    for done in range(4):
        until(lambda done=done: len(readmissions()) == done, what=f"readmission {done}")
        assert chat(dispatch, "cooling").status_code == 502  # reaches it: ejects it
    until(lambda: len(readmissions()) == 4, what="the last readmission")
    assert [e["cooldown_s"] for e in ejections()] == [0.2, 0.4, 0.5, 0.5]
    assert len(attempts(upstream, "cooling")) == 4
    for ejected, readmitted, cooldown in zip(
        ejections(), readmissions(), [0.2, 0.4, 0.5, 0.5], strict=True
    ):
        assert readmitted["why"] == "cool-down over"
        waited = (_ts(readmitted) - _ts(ejected)).total_seconds()
        assert waited >= cooldown - 0.01, (waited, cooldown)  # a timer never fires early


# Scaling out: Redis unreachable ---------------------------------------------------------


def test_on_error_closed_refuses_limited_keys_while_redis_is_unreachable(
    start_server: Callable[..., RunningServer],
) -> None:
    closed_port = free_port()  # nothing listens there
    server = start_server(
        cluster_config(
            scripted("guarded"),
            state={
                "redis_url": f"redis://127.0.0.1:{closed_port}/0",
                "on_error": "closed",
                "timeout_s": 0.25,
            },
            auth={
                "api_keys": [
                    {"name": "limited", "key": "k-limited", "rpm": 100},
                    {"name": "unlimited", "key": "k-unlimited"},
                ]
            },
        )
    )
    response = chat(server, "guarded", key="k-limited")
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "limiter_unavailable"
    assert error["type"] == "server_error"
    assert response.headers["retry-after"] == "1"
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k-limited", max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="guarded", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert any(e["policy"] == "fail-closed" for e in server.events("limiter_unavailable"))
    # A key without limits never asks Redis.
    assert chat(server, "guarded", key="k-unlimited").status_code == 200


# Responses: an alias passes through only if every target does ---------------------------


@pytest.fixture(scope="module")
def native_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream(native_responses=True).start()
    yield fake
    fake.stop()


def test_an_alias_passes_responses_through_only_if_every_target_does(
    native_upstream: FakeUpstream, start_server: Callable[..., RunningServer]
) -> None:
    def model(name: str, mode: str) -> dict[str, Any]:
        options = {"base_url": native_upstream.url(name), "model": "ok", "responses": mode}
        return {"name": name, "backend": "openai", "health": {"interval_s": 0}, "options": options}

    server = start_server(
        cluster_config(
            model("native-a", "passthrough"),
            model("native-b", "passthrough"),
            model("translated", "translate"),
            routes=[
                {"alias": "all-native", "targets": ["native-a", "native-b"]},
                {"alias": "mixed", "targets": ["native-a", "translated"]},
            ],
        )
    )
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    expected = {"native-a": "native reply", "all-native": "native reply", "mixed": "fake reply"}
    for name, text in expected.items():
        before = len(native_upstream.requests)
        reply = client.responses.create(model=name, input="hi")
        assert reply.output_text == text, name
        (sent,) = native_upstream.requests[before:]
        assert sent.base == "native-a", name
        assert sent.path == ("responses" if text == "native reply" else "chat/completions"), name


# Budgets: week and month ----------------------------------------------------------------

PRICE = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}  # a plain reply costs 7


def period_start(period: str, today: dt.date) -> dt.date:
    return today - dt.timedelta(days=today.weekday()) if period == "week" else today.replace(day=1)


def next_period(period: str, today: dt.date) -> dt.date:
    start = period_start(period, today)
    if period == "week":
        return start + dt.timedelta(days=7)
    return (start + dt.timedelta(days=32)).replace(day=1)


@pytest.mark.parametrize("period", ["week", "month"])
def test_week_and_month_budgets_sum_the_days_of_their_calendar_period(
    tmp_path: Path,
    upstream: FakeUpstream,
    start_server: Callable[..., RunningServer],
    period: str,
) -> None:
    """Spend of the period's first day counts (14 of 20), spend of the day before it does
    not (1,000): one request (7) passes, the next is refused until the next period."""
    ledger = tmp_path / "usage.sqlite"
    key = f"k-{period}"
    config = cluster_config(
        {
            "name": "priced",
            "backend": "openai",
            "health": {"interval_s": 0},
            "pricing": PRICE,
            "options": {"base_url": upstream.base_url, "model": "ok"},
        },
        auth={
            "api_keys": [{"name": period, "key": key, "budget": {"amount": 20, "period": period}}]
        },
        billing={"currency": "EUR"},
        state={"usage_path": str(ledger)},
    )
    start_server(config).stop()  # creates the ledger
    today = dt.datetime.now(dt.UTC).date()
    first = period_start(period, today)
    with sqlite3.connect(ledger) as conn:
        conn.executemany(
            "INSERT INTO spend (day, key, cost) VALUES (?, ?, ?)",
            [
                (first.isoformat(), period, 14.0),
                ((first - dt.timedelta(days=1)).isoformat(), period, 1000.0),
            ],
        )
    server = start_server(config)
    responses = [chat(server, "priced", key=key) for _ in range(2)]
    assert [r.status_code for r in responses] == [200, 429], responses[-1].text
    refused = responses[1]
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert f"budget of 20 EUR per {period} is spent (21 EUR used)" in error["message"]
    assert f"It resets at {next_period(period, today).isoformat()}T00:00:00Z" in error["message"]
    assert refused.headers["x-should-retry"] == "false"
    seconds_left = (
        dt.datetime.combine(next_period(period, today), dt.time(), dt.UTC) - dt.datetime.now(dt.UTC)
    ).total_seconds()
    assert 0 < int(refused.headers["retry-after"]) <= seconds_left + 1
