"""A model that cannot run fails its load, with a reason, and stops being tried.

The real SmolLM2 under the real server; its worker process kills itself with SIGILL at
its one-token warm-up through the child's documented test seam
(``appliance.child.server.FAULT_ENV``), as a llama.cpp built for another CPU does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from appliance.child.server import FAULT_ENV
from appliance.config import load_config
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from tests.conftest import cluster_config, scripted
from tests.local.models import ASK, corrupt_gguf, smollm2
from tests.support.poll import until
from tests.support.server import RunningServer

ADMIN = "admin-secret-for-tests"


def broken_server(start_server: Callable[..., RunningServer]) -> RunningServer:
    config = cluster_config(
        smollm2("bad", load="on_demand", max_load_attempts=2, queue_timeout_s=120),
        scripted("echo"),
        server={"admin_key": ADMIN},
    )
    return start_server(config, env={FAULT_ENV: "bad:SIGILL"})


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return broken_server(start_server)


def lifecycle(server: RunningServer) -> dict[str, Any]:
    models = {m["name"]: m for m in server.status(ADMIN)["models"]}
    return dict(models["bad"]["lifecycle"])


def ask(server: RunningServer, model: str = "bad") -> httpx.Response:
    body = {"model": model, "messages": ASK, "max_tokens": 3}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)


def failed_loads(server: RunningServer) -> float:
    return server.metric("appliance_model_loads_total", ADMIN, model="bad", result="failed")


def test_a_child_killed_at_warm_up_is_a_load_failure_then_failed_after_the_cap(
    server: RunningServer,
) -> None:
    first = ask(server)
    assert first.status_code == 503
    error = first.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "SIGILL" in error["message"]
    assert "rebuild with CMAKE_ARGS=-DGGML_NATIVE=OFF" in error["message"]
    assert "retry-after" in first.headers

    # Tried once more after its back-off, then no more: failed, with the reason.
    state = until(
        lambda: lifecycle(server),
        accept=lambda found: found["state"] == "failed",
        what="the model failed after max_load_attempts",
    )
    assert "instructions this CPU lacks" in state["last_error"]
    assert state["failed_loads"] == 2
    assert failed_loads(server) == 2
    after = ask(server)
    assert after.status_code == 503
    assert after.json()["error"]["code"] == "model_load_failed"
    assert "not tried again until an admin load" in after.json()["error"]["message"]
    assert "SIGILL" in after.json()["error"]["message"]
    assert failed_loads(server) == 2  # a request does not try again
    ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["unavailable"] == ["bad"]
    assert ask(server, "echo").status_code == 200  # the others serve on


def test_an_admin_load_tries_a_failed_model_again(
    start_server: Callable[..., RunningServer],
) -> None:
    server = broken_server(start_server)  # its own: the test passes alone and in any order
    assert ask(server).status_code == 503  # the loads that fail, up to the cap
    until(lambda: lifecycle(server)["state"] == "failed", what="the model failed")
    loading = server.event_count("model_loading", model="bad")
    headers = {"Authorization": f"Bearer {ADMIN}"}
    answer = httpx.post(
        f"{server.base_url}/admin/load", json={"model": "bad"}, headers=headers, timeout=120
    )
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "model_load_failed"
    assert server.event_count("model_loading", model="bad") == loading + 1
    until(lambda: lifecycle(server)["state"] == "failed", what="failed again after the cap")
    assert server.event_count("model_failed", model="bad") == 2  # at the cap, then again


async def test_a_reload_adding_a_startup_model_that_fails_for_good_fails_at_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cluster_config(scripted("echo"))))
    cluster = Cluster.from_config(load_config(path, environ={}))
    await cluster.start()
    ref = ClusterRef(cluster)
    reloader = Reloader(ref, lambda: load_config(path, environ={}))
    broken = smollm2("broken", model={"path": corrupt_gguf(tmp_path)}, max_load_attempts=1)
    path.write_text(yaml.safe_dump(cluster_config(scripted("echo"), broken)))
    try:
        outcome = await reloader.reload("test")  # not after startup_timeout_s: at the failure
    finally:
        await reloader.stop()
        await ref.current.close()
    assert not outcome.ok and outcome.error is not None
    assert "model 'broken' failed to load: ValueError" in outcome.error
    assert ref.current is cluster
