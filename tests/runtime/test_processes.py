"""The main process finds its worker processes in the runtime folder, and only live ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from appliance.runtime import processes as runtime
from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer

CHILD = """
import signal, sys, time
from pathlib import Path
from appliance.runtime import processes as runtime
folder = Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: (folder / "got-signal").write_text("yes"))
registration = runtime.register(str(folder))
print("registered", flush=True)
time.sleep(60)  # alive until the test kills it
"""


def start_child(folder: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "registered"
    return child


def test_a_registered_process_is_found_and_signalled(tmp_path: Path) -> None:
    child = start_child(tmp_path)
    try:
        assert runtime.live_pids(tmp_path) == [child.pid]
        assert runtime.signal_all(tmp_path, signal.SIGUSR1) == [child.pid]
        until((tmp_path / "got-signal").exists, what="the child's signal handler writing")
        assert (tmp_path / "got-signal").read_text() == "yes"
    finally:
        child.kill()
        child.wait()


def test_a_dead_process_is_never_signalled_and_its_file_is_removed(tmp_path: Path) -> None:
    child = start_child(tmp_path)
    child.kill()  # no chance to unregister: its file stays, its lock goes
    child.wait()
    assert (tmp_path / f"{child.pid}.pid").exists()
    assert runtime.signal_all(tmp_path, signal.SIGUSR1) == []
    assert not (tmp_path / f"{child.pid}.pid").exists()


def test_a_file_nobody_holds_is_stale(tmp_path: Path) -> None:
    (tmp_path / f"{os.getpid()}.pid").write_text(str(os.getpid()))  # this very PID, unlocked
    assert runtime.live_pids(tmp_path) == []


def test_leaving_removes_the_registration(tmp_path: Path) -> None:
    registration = runtime.register(str(tmp_path))
    assert registration is not None
    assert runtime.live_pids(tmp_path) == [os.getpid()]
    registration.close()
    assert list(tmp_path.iterdir()) == []


def test_without_a_runtime_folder_nothing_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.RUNTIME_ENV, raising=False)
    assert runtime.register() is None


def two_processes(version: int) -> dict[str, Any]:
    return cluster_config(
        scripted("main", [f"v{version}"]), server={"processes": 2, "watch_config": False}
    )


def test_sighup_reloads_every_process_in_place(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(two_processes(0))
    pids: set[int] = set()

    def both_up() -> bool:
        pids.add(server.status()["pid"])
        return len(pids) == 2

    until(both_up, what="both Granian processes answering")
    server.config_path.write_text(yaml.safe_dump(two_processes(7)))
    os.kill(server.process.pid, signal.SIGHUP)
    body = {"model": "main", "messages": [{"role": "user", "content": "x"}]}
    seen: dict[int, str] = {}

    def both_reloaded() -> bool:
        with httpx.Client(base_url=server.base_url) as fresh:
            pid = fresh.get("/status.json").json()["pid"]
            reply = fresh.post("/v1/chat/completions", json=body).json()
        seen[pid] = reply["choices"][0]["message"]["content"]
        return len(seen) == 2 and set(seen.values()) == {"v7"}

    until(both_reloaded, what="both processes answering v7")
    assert seen.keys() == pids, "the same two processes: reloaded in place, not respawned"
    assert set(seen.values()) == {"v7"}
    assert server.event_count("config_reloaded", reason="sighup") >= 2
