"""README: `server.watch_config: false` turns watching off on reload too, and the log says so."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import yaml

from tests.conftest import cluster_config, scripted
from tests.support.server import RunningServer


def wait_for(predicate: Callable[[], bool], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_watch_config_false_by_hot_reload_stops_watching_and_logs_it(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    config = cluster_config(scripted("m", ["v1"]))
    path.write_text(yaml.safe_dump(config))
    server = RunningServer(path, tmp_path)
    try:
        config["server"] = {"watch_config": False}
        path.write_text(yaml.safe_dump(config))
        assert wait_for(lambda: "config_watch_stopped" in server.log()), server.log()

        config["routes"] = [{"alias": "unseen", "targets": ["m"]}]
        path.write_text(yaml.safe_dump(config))
        time.sleep(1.5)  # the debounce and a reload, had the file been watched
        models = httpx.get(f"{server.base_url}/v1/models").json()["data"]
        assert "unseen" not in [m["id"] for m in models]
        assert server.log().count('"config_reloaded"') == 1
    finally:
        server.stop()
