"""README: `server.watch_config: false` turns watching off on reload too, and the log says so."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer, WatchWitness


def test_watch_config_false_by_hot_reload_stops_watching_and_logs_it(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    config = cluster_config(scripted("m", ["v1"]))
    path.write_text(yaml.safe_dump(config))
    server = RunningServer(path, tmp_path)
    witness = WatchWitness(tmp_path, tmp_path / "witness")
    try:
        config["server"] = {"watch_config": False}
        path.write_text(yaml.safe_dump(config))
        until(lambda: server.events("config_watch_stopped"), what="config_watch_stopped")

        config["routes"] = [{"alias": "unseen", "targets": ["m"]}]
        path.write_text(yaml.safe_dump(config))
        witness.see_a_change()  # a watcher of this folder has had its chance
        models = httpx.get(f"{server.base_url}/v1/models").json()["data"]
        assert "unseen" not in [m["id"] for m in models]
        assert server.event_count("config_reloaded") == 1
    finally:
        witness.stop()
        server.stop()
