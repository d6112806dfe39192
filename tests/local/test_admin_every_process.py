"""With ``server.processes: 2`` an admin load or unload reaches both server processes.

The real SmolLM2 under the real server (two Granian worker processes, each with its own
local model): an admin unload leaves no model process running, an admin load starts one
below each server process, and each answer lists the model's state in both.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config
from tests.local.models import smollm2, worker_processes
from tests.support.poll import until
from tests.support.server import RunningServer, descendants

ADMIN = "admin-secret-for-tests"
HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    config = cluster_config(
        smollm2("smol", load="on_demand"),
        server={"processes": 2, "admin_key": ADMIN, "watch_config": False},
    )
    return start_server(config)


@pytest.fixture(scope="module")
def serving(server: RunningServer) -> set[int]:
    """The PIDs of both server processes, once each has answered."""
    pids: set[int] = set()

    def both_up() -> bool:
        with httpx.Client(base_url=server.base_url) as fresh:  # a new connection each time
            pids.add(fresh.get("/status.json", headers=HEADERS, timeout=10).json()["pid"])
        return len(pids) == 2

    until(both_up, what="both server processes answering")
    assert pids <= set(descendants(server.process.pid))
    return pids


def admin(server: RunningServer, action: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{server.base_url}/admin/{action}", json={"model": "smol"}, headers=HEADERS, timeout=180
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def runtime_folder(server: RunningServer) -> Path:
    """The runtime folder of the server (``appliance.runtime.processes.create_folder``)."""
    found = list(Path(tempfile.gettempdir()).glob(f"appliance-run-{server.port}-*"))
    assert len(found) == 1, found
    return found[0]


def model_children(pid: int) -> list[int]:
    """The model processes below ``pid`` that still run."""
    return sorted(child for child in worker_processes(pid) if child in descendants(pid))


def test_an_admin_load_starts_the_model_in_every_process(
    server: RunningServer, serving: set[int]
) -> None:
    body = admin(server, "load")
    assert body["model"] == "smol" and body["state"] == "loaded"  # the answering process
    processes = body["processes"]
    assert {entry["pid"] for entry in processes} == serving
    assert processes[0]["pid"] in serving and processes[0]["state"] == body["state"]
    assert [(entry["answered"], entry["state"]) for entry in processes] == [(True, "loaded")] * 2
    for pid in serving:
        assert len(model_children(pid)) == 1, f"one model process below server process {pid}"


def test_an_admin_unload_leaves_no_model_process_running(
    server: RunningServer, serving: set[int]
) -> None:
    admin(server, "load")
    assert len(model_children(server.process.pid)) == 2
    body = admin(server, "unload")
    assert body["state"] == "unloaded"
    assert {entry["pid"] for entry in body["processes"]} == serving
    assert [entry["state"] for entry in body["processes"]] == ["unloaded"] * 2
    until(
        lambda: model_children(server.process.pid) == [],
        what="no model process left below the server",
    )
    # Loaded again afterwards, in both: the unload did not leave either unable to load.
    assert [entry["state"] for entry in admin(server, "load")["processes"]] == ["loaded"] * 2
    assert len(model_children(server.process.pid)) == 2
    # Nothing is left in the runtime folder but the processes' own registrations.
    folder = runtime_folder(server)
    left = sorted(path.name for path in (folder / "commands").iterdir())
    assert left == [], left
