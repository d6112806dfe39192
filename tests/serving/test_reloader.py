"""The reloader in-process: replace, never mutate; carry unchanged models over."""

from __future__ import annotations

import asyncio
import copy
import gc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from structlog.testing import capture_logs

from appliance.config import ApplianceConfig, load_config
from appliance.http.app import create_app
from appliance.runtime import heap
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from tests.conftest import cluster_config, scripted
from tests.support.poll import until_async

BASE = cluster_config(
    scripted("keep", ["same"], workers=2),
    scripted("change", ["old"]),
    scripted("drop", ["bye"]),
)


def write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config))


async def started(path: Path, **options: Any) -> tuple[ClusterRef, Reloader]:
    config = load_config(path, environ={})
    cluster = Cluster.from_config(config)
    await cluster.start()
    ref = ClusterRef(cluster)
    return ref, Reloader(ref, lambda: load_config(path, environ={}), **options)


async def saved_until_seen(ref: ClusterRef, alias: str, save: Callable[[], None]) -> None:
    """``save`` the change again at each poll until the route ``alias`` serves: a watcher
    just started may miss the first save, and a save of what is loaded reloads nothing."""

    def seen() -> bool:
        if alias in ref.current.registry.routes:
            return True
        save()
        return False

    await until_async(seen, what=f"the route {alias!r} picked up by the watcher")


async def test_unchanged_model_keeps_its_workers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write(path, BASE)
    ref, reloader = await started(path)
    before = ref.current.registry.groups["keep"].workers
    changed = copy.deepcopy(BASE)
    changed["models"][1]["options"]["reply"] = ["new"]
    del changed["models"][2]
    changed["models"].append(scripted("added", ["hi"]))
    write(path, changed)

    outcome = await reloader.reload("test")

    groups = ref.current.registry.groups
    assert outcome.ok
    assert (outcome.carried, outcome.changed) == (["keep"], ["change"])
    assert (outcome.added, outcome.removed) == (["added"], ["drop"])
    assert all(a is b for a, b in zip(groups["keep"].workers, before, strict=True))
    assert groups["change"].config.options.reply == ["new"]  # type: ignore[union-attr]
    assert set(groups) == {"keep", "change", "added"}
    await reloader.stop()
    await ref.current.close()


async def test_invalid_file_changes_nothing_and_logs_where(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write(path, BASE)
    ref, reloader = await started(path)
    serving = ref.current
    path.write_text(path.read_text().replace("workers: 2", "workers: many"))

    with capture_logs() as logs:
        outcome = await reloader.reload("test")

    assert not outcome.ok
    assert ref.current is serving
    [failed] = [e for e in logs if e["event"] == "config_reload_failed"]
    assert any("models[0].workers (line" in p for p in failed["problems"])
    await ref.current.close()


async def test_retired_workers_close_only_after_requests_finish(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    slow = cluster_config(scripted("m", ["a", "b"], options={"delay_ms": 150}))
    write(path, slow)
    ref, reloader = await started(path)
    old_worker = ref.current.registry.groups["m"].workers[0]
    app = create_app(ref.current.config, cluster=ref.current)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        in_flight = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        group = ref.current.registry.groups["m"]
        await until_async(lambda: group.in_flight() == 1, what="the request in flight")
        changed = copy.deepcopy(slow)
        changed["models"][0]["options"]["reply"] = ["c"]
        write(path, changed)
        await reloader.reload("test")
        assert old_worker.up, "a worker with a request in flight must not be closed"
        response = await in_flight
    assert response.json()["choices"][0]["message"]["content"] == "ab"
    await until_async(lambda: old_worker.closed, what="the retired worker closed")
    assert not old_worker.up
    await reloader.stop()
    await ref.current.close()


async def test_file_change_is_picked_up_by_the_watcher(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    write(path, BASE)
    ref, reloader = await started(path, watch=path, debounce_ms=50)
    await reloader.start()
    changed = copy.deepcopy(BASE)
    changed["routes"] = [{"alias": "new-alias", "targets": ["keep"]}]

    def save() -> None:  # as an editor does: a temporary file renamed over the original
        tmp = tmp_path / ".c.yaml.swp"
        write(tmp, changed)
        tmp.rename(path)

    await saved_until_seen(ref, "new-alias", save)
    assert reloader.reloads == 1
    await reloader.stop()
    await ref.current.close()


def test_config_equality_is_what_decides_carry_over() -> None:
    a = ApplianceConfig.model_validate(copy.deepcopy(BASE))
    b = ApplianceConfig.model_validate(copy.deepcopy(BASE))
    assert a.models[0] == b.models[0]
    assert a.models[0] != a.models[1]


async def test_a_retired_cluster_is_freed_even_after_the_heap_was_frozen(tmp_path: Path) -> None:
    """A serving process freezes its heap at start (appliance.heap); frozen objects are
    never collected, so a reload must unfreeze before it collects what it retired."""
    path = tmp_path / "c.yaml"
    write(path, BASE)
    ref, reloader = await started(path, settle=heap.settle)
    retired = weakref.ref(ref.current.registry.groups["drop"])
    try:
        heap.freeze()  # as a serving process does once started
        changed = copy.deepcopy(BASE)
        del changed["models"][2]
        write(path, changed)
        assert (await reloader.reload("test")).removed == ["drop"]
        await until_async(lambda: retired() is None, what="the retired model's group freed")
    finally:
        gc.unfreeze()
        await reloader.stop()
        await ref.current.close()


def test_tune_collects_less_often_than_the_default() -> None:
    before = gc.get_threshold()
    try:
        heap.tune()
        assert gc.get_threshold()[0] > before[0]
    finally:
        gc.set_threshold(*before)


def _kubelet_update(folder: Path, stamp: str, config: dict[str, Any]) -> None:
    """How Kubernetes updates a mounted ConfigMap: a new timestamped folder, a symlink to
    it made aside, renamed over ``..data``; the file itself is a symlink through ``..data``
    and never changes."""
    fresh = folder / f"..{stamp}"
    fresh.mkdir()
    write(fresh / "cluster.yaml", config)
    (folder / "..data_tmp").symlink_to(fresh.name)
    (folder / "..data_tmp").rename(folder / "..data")


async def test_a_configmap_update_by_symlink_swap_is_picked_up(tmp_path: Path) -> None:
    _kubelet_update(tmp_path, "2026_11_27_10_00_00.1", BASE)
    path = tmp_path / "cluster.yaml"
    path.symlink_to("..data/cluster.yaml")
    ref, reloader = await started(path, watch=path, debounce_ms=50)
    await reloader.start()
    changed = copy.deepcopy(BASE)
    changed["routes"] = [{"alias": "from-configmap", "targets": ["keep"]}]
    stamps = iter(range(2, 10_000))

    def update() -> None:
        _kubelet_update(tmp_path, f"2026_11_27_10_05_00.{next(stamps)}", changed)

    await saved_until_seen(ref, "from-configmap", update)
    assert reloader.reloads == 1
    await reloader.stop()
    await ref.current.close()
