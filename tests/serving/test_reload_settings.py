"""Server settings on reload: applied when the reloader can, else ``restart_needed``."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from structlog.testing import capture_logs

from appliance.config import load_config
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from tests.conftest import cluster_config, scripted
from tests.support.pki import Pki
from tests.support.poll import until_async

BASE = cluster_config(scripted("m", ["a"]))


def write(path: Path, config: dict[str, Any]) -> None:
    # As editors save: a temporary file renamed over the original.
    tmp = path.with_name(".c.yaml.tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.rename(path)


def with_server(config: dict[str, Any], **server: Any) -> dict[str, Any]:
    out = copy.deepcopy(config)
    out.setdefault("server", {}).update(server)
    return out


async def serving(path: Path, config: dict[str, Any]) -> tuple[ClusterRef, Reloader]:
    write(path, config)
    cluster = Cluster.from_config(load_config(path, environ={}))
    await cluster.start()
    ref = ClusterRef(cluster)
    reloader = Reloader(ref, lambda: load_config(path, environ={}), watch=path, debounce_ms=50)
    await reloader.start()
    return ref, reloader


async def write_until(path: Path, config: dict[str, Any], check: Callable[[], bool]) -> None:
    """Write ``config`` again at each poll until ``check`` holds: a watcher just started may
    not see the first write, and a write of what is already loaded reloads nothing."""

    def written() -> bool:
        if check():
            return True
        write(path, config)
        return False

    await until_async(written, what=f"a watcher picking up {path.name}")


async def a_watcher_had_its_chance(folder: Path) -> None:
    """Once a second watcher of ``folder`` (same debounce) has reloaded a change written
    now, a watcher of ``c.yaml`` has had its chance at a change written before."""
    path = folder / "witness.yaml"
    ref, witness = await serving(path, BASE)
    seen = copy.deepcopy(BASE)
    seen["routes"] = [{"alias": "witnessed", "targets": ["m"]}]
    await write_until(path, seen, lambda: "witnessed" in ref.current.registry.routes)
    await witness.stop()
    await ref.current.close()


async def test_reload_drains_with_the_new_drain_timeout(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    ref, reloader = await serving(path, with_server(BASE, watch_config=False, drain_timeout_s=60))
    old = ref.current.registry.groups["m"]
    stuck = await old.acquire()  # a request that never finishes
    changed = with_server(BASE, watch_config=False, drain_timeout_s=0.3)
    changed["models"][0]["options"]["reply"] = ["b"]
    write(path, changed)

    with capture_logs() as logs:
        await reloader.reload("test")
        # The old drain_timeout_s (60 s) is past this deadline; the new one (0.3 s) is not.
        await until_async(
            lambda: stuck.closed, timeout=30, what="the retired worker closed by the new timeout"
        )

    [timeout] = [e for e in logs if e["event"] == "drain_timeout"]
    assert timeout["timeout_s"] == 0.3 and timeout["workers"] == ["m/0"]
    await reloader.stop()
    await ref.current.close()


async def test_watch_config_turned_off_by_reload_stops_the_watcher_and_on_starts_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    ref, reloader = await serving(path, BASE)
    assert reloader.watching

    # Picked up by the watcher.
    await write_until(path, with_server(BASE, watch_config=False), lambda: reloader.reloads > 0)
    assert not ref.current.config.server.watch_config
    assert not reloader.watching and reloader.reloads == 1

    unwatched = with_server(BASE, watch_config=False)
    unwatched["routes"] = [{"alias": "ignored", "targets": ["m"]}]
    write(path, unwatched)
    await a_watcher_had_its_chance(tmp_path)
    assert "ignored" not in ref.current.registry.routes, "a stopped watcher reloaded"
    assert reloader.reloads == 1

    write(path, with_server(BASE, watch_config=True))
    await reloader.reload("sighup")  # watching is off: only a signal reloads
    assert reloader.watching and reloader.reloads == 2
    watched = copy.deepcopy(BASE)
    watched["routes"] = [{"alias": "seen", "targets": ["m"]}]
    await write_until(path, watched, lambda: "seen" in ref.current.registry.routes)
    assert reloader.reloads == 3
    await reloader.stop()
    await ref.current.close()


async def test_settings_read_at_start_are_named_in_restart_needed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    start = with_server(BASE, watch_config=False, port=8000, drain_timeout_s=10)
    ref, reloader = await serving(path, start)
    moved = with_server(start, port=8001, drain_timeout_s=20)
    moved["auth"] = {"window_s": 10}
    moved["state"] = {"on_error": "closed", "timeout_s": 1}
    write(path, moved)

    with capture_logs() as logs:
        assert (await reloader.reload("test")).ok
    [needed] = [e for e in logs if e["event"] == "restart_needed"]
    assert sorted(needed["settings"]) == [
        "auth.window_s",
        "server.drain_timeout_s",
        "server.port",
        "state.on_error",
        "state.timeout_s",
    ]
    assert needed["reason"] == "test"  # the reload's, as config_reloaded says it

    write(path, with_server(start, drain_timeout_s=5))  # back to the start values
    with capture_logs() as logs:
        assert (await reloader.reload("test")).ok
    assert [e for e in logs if e["event"] == "restart_needed"] == []
    await reloader.stop()
    await ref.current.close()


async def test_a_watched_edit_that_needs_a_restart_says_the_file_changed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    ref, reloader = await serving(path, with_server(BASE, port=8000))
    with capture_logs() as logs:
        await write_until(path, with_server(BASE, port=8001), lambda: reloader.reloads > 0)
        [needed] = await until_async(
            lambda: [e for e in logs if e["event"] == "restart_needed"],
            what="restart_needed after the watched edit",
        )
    assert needed["settings"] == ["server.port"]
    assert needed["reason"] == "file_changed"
    await reloader.stop()
    await ref.current.close()


async def test_tls_settings_and_replaced_tls_files_need_a_restart(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path / "pki")
    path = tmp_path / "c.yaml"
    start = with_server(BASE, watch_config=False, tls=pki.tls_section())
    ref, reloader = await serving(path, start)

    write(path, with_server(start, tls={**pki.tls_section(), "min_version": "1.3"}))
    with capture_logs() as logs:
        assert (await reloader.reload("test")).ok
    [needed] = [e for e in logs if e["event"] == "restart_needed"]
    assert needed["settings"] == ["server.tls"]

    write(path, start)  # the settings it started with, but a renewed key and certificate
    pki.issue_server(pki.cert_file, pki.key_file)
    with capture_logs() as logs:
        assert (await reloader.reload("test")).ok
    [needed] = [e for e in logs if e["event"] == "restart_needed"]
    assert needed["settings"] == ["server.tls.cert_file", "server.tls.key_file"]

    write(path, with_server(BASE, watch_config=False))  # TLS off: a restart too
    with capture_logs() as logs:
        assert (await reloader.reload("test")).ok
    [needed] = [e for e in logs if e["event"] == "restart_needed"]
    assert needed["settings"] == ["server.tls"]
    await reloader.stop()
    await ref.current.close()
