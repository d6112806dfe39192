"""How ``appliance serve`` runs: one process by default, its PID file, its signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from appliance.runtime.server import default_pid_file
from tests.conftest import cluster_config, scripted
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import in_background, until
from tests.support.server import RunningServer, descendants, free_port


def serve_argv(config: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)]


def chat(server: RunningServer, model: str) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def test_one_process_serves_reloads_on_sighup_and_stops_on_sigterm(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(cluster_config(scripted("a", ["one"])))
    pid = server.process.pid
    pid_file = default_pid_file(server.port)
    assert pid_file.read_text() == str(pid), "reload signals the PID the file names"
    assert descendants(pid) == [pid], "processes: 1 serves from the process itself"
    assert chat(server, "a").json()["choices"][0]["message"]["content"] == "one"

    server.config_path.write_text(yaml.safe_dump(cluster_config(scripted("b", ["two"]))))
    os.kill(pid, signal.SIGHUP)
    until(lambda: chat(server, "b").status_code == 200, what="model b after SIGHUP")
    assert chat(server, "b").json()["choices"][0]["message"]["content"] == "two"
    assert server.process.poll() is None, "SIGHUP reloads; it does not end the process"

    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(15) == 0
    assert not pid_file.exists()
    assert "experimental" not in server.log()  # no event names it: any line would be wrong


def test_a_pid_file_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(cluster_config(scripted("a", ["one"]))))
    server = RunningServer(config, tmp_path)
    try:
        # A server that died left its file naming a PID no process has now.
        pid_file = default_pid_file(server.port)
        server.stop()
        pid_file.write_text(str(gone.pid))
        again = subprocess.Popen(
            serve_argv(config, server.port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Serving (its signal handlers in place), not only past writing its PID file:
            # a SIGTERM in between ends a starting process by the default action.
            until(
                lambda: httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200,
                what="the second server ready",
            )
            assert pid_file.read_text() == str(again.pid)
        finally:
            again.terminate()
            assert again.wait(15) == 0
    finally:
        server.stop()


def test_one_process_holds_many_streams_open_at_once(
    start_server: Callable[..., RunningServer],
) -> None:
    """300 streams, each 3 chunks 2 s apart: every one has its first chunk before any ends.

    A server that takes only so many requests at a time (Granian's embedded default is
    128) holds the rest until the first ones end. The 4 s each stream lasts after its first
    chunk is for a busy machine to open the 300 from this one process.
    """
    slow = scripted("slow", ["a", "b", "c"], options={"delay_ms": 2000})
    server = start_server(cluster_config(slow))
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    count, first, ended = 300, [], []

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and i not in first:
                    first.append(i)
        ended.append((i, len(first)))

    async def run() -> None:
        limits = httpx.Limits(max_connections=count + 10)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=60) as client:
            await asyncio.gather(*(one(client, i) for i in range(count)))

    asyncio.run(run())
    assert len(ended) == count
    assert ended[0][1] == count, f"only {ended[0][1]} streams had begun when the first ended"


def test_sigterm_answers_a_request_still_waiting_at_the_drain_time(
    start_server: Callable[..., RunningServer],
) -> None:
    """A plain request whose upstream never answers: at ``drain_timeout_s`` after SIGTERM it
    gets a 503 envelope (not a cut connection), and the process exits 0 soon after."""
    upstream = FakeUpstream().start()
    try:
        hang = {
            "name": "hang",
            "backend": "openai",
            "options": {"base_url": upstream.base_url, "model": "hang"},
        }
        server = start_server(
            cluster_config(hang, scripted("a", ["one"]), server={"drain_timeout_s": 1})
        )
        pending = in_background(
            lambda: httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={"model": "hang", "messages": [{"role": "user", "content": "hi"}]},
                timeout=20,
            )
        )
        until(lambda: upstream.requests, what="the request reaching the upstream")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        reply = pending()
        assert reply.status_code == 503
        assert reply.json()["error"]["code"] == "service_unavailable"
        assert server.process.wait(15) == 0
        # At the drain time (1 s), not when the upstream's 30 s hang or the client's 20 s end.
        assert time.monotonic() - started < 15
        assert server.events("requests_ended_at_shutdown")
    finally:
        upstream.stop()


def test_a_shutdown_stuck_past_its_limit_ends_the_process(tmp_path: Path) -> None:
    """The last resort when something ignores the drain: the watchdog exits with 1."""
    script = (
        "import time\n"
        "from appliance.runtime.server import Watchdog\n"
        "Watchdog(0.3).start()\n"
        "time.sleep(30)\n"  # a shutdown stuck for longer than the run's timeout below
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=20)
    assert done.returncode == 1, "the watchdog ended it (the sleep's end would exit 0)"
    assert b"shutdown_timeout" in done.stdout + done.stderr


def test_a_failed_start_exits_1_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "cluster.yaml"
    bad = cluster_config(
        scripted("a", ["one"]), state={"usage_path": "/proc/no-such-folder/usage.sqlite"}
    )
    config.write_text(yaml.safe_dump(bad))
    done = subprocess.run(serve_argv(config, free_port()), capture_output=True, timeout=60)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).decode().splitlines()
    assert lines
    for line in lines:  # every line a JSON log line: the reason is logged, nothing raw
        json.loads(line)
    assert any("lifespan startup failed" in line for line in lines)
