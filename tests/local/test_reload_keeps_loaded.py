"""Hot reload and local model lifecycles: an unchanged model keeps its workers and state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from appliance.config import load_config
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from tests.conftest import cluster_config, scripted
from tests.local.models import alive, smollm2
from tests.support.poll import until_async


def write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config))


def base(budget_mb: int = 1000, **fields: Any) -> dict[str, Any]:
    model = smollm2("kept", load="on_demand", **fields)
    return cluster_config(model, scripted("echo"), local={"memory_budget_mb": budget_mb})


@pytest.fixture
async def loaded(tmp_path: Path) -> AsyncIterator[tuple[Path, ClusterRef, Reloader]]:
    path = tmp_path / "cluster.yaml"
    write(path, base())
    cluster = Cluster.from_config(load_config(path, environ={}))
    await cluster.start()
    ref = ClusterRef(cluster)
    reloader = Reloader(ref, lambda: load_config(path, environ={}))
    lifecycle = cluster.registry.groups["kept"].lifecycle
    assert lifecycle is not None
    await lifecycle.load(120)
    try:
        yield path, ref, reloader
    finally:
        await reloader.stop()
        await ref.current.close()


async def test_an_unchanged_loaded_model_stays_loaded_with_its_state(
    loaded: tuple[Path, ClusterRef, Reloader],
) -> None:
    path, ref, reloader = loaded
    group = ref.current.registry.groups["kept"]
    assert group.lifecycle is not None
    pid, last_used = group.workers[0].pid(), group.lifecycle.last_used_at
    assert pid is not None and alive(pid)
    changed = base(budget_mb=900)
    changed["models"].append(scripted("added"))
    write(path, changed)

    outcome = await reloader.reload("test")

    assert outcome.ok and "kept" in outcome.carried and outcome.added == ["added"]
    carried = ref.current.registry.groups["kept"]
    assert carried is group and carried.lifecycle is not None
    assert carried.lifecycle.state == "loaded"
    assert carried.workers[0].pid() == pid and alive(pid)
    assert carried.lifecycle.last_used_at == last_used
    residency = ref.current.residency
    assert residency.models == [carried.lifecycle] and residency.budget_mb == 900


async def test_a_changed_model_starts_unloaded_and_its_old_workers_stop(
    loaded: tuple[Path, ClusterRef, Reloader],
) -> None:
    path, ref, reloader = loaded
    old = ref.current.registry.groups["kept"]
    pid = old.workers[0].pid()
    assert pid is not None
    write(path, base(idle_unload_s=60))

    outcome = await reloader.reload("test")

    assert outcome.ok and outcome.changed == ["kept"]
    fresh = ref.current.registry.groups["kept"]
    assert fresh is not old and fresh.lifecycle is not None
    assert fresh.lifecycle.state == "unloaded"
    # The retired model drains (nothing in flight), then stops.
    await until_async(lambda: not alive(pid), what="the retired model's process gone")
