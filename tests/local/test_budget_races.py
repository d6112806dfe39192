"""Loads that race under a memory budget that fits one SmolLM2: every request is served.

In process, with the real SmolLM2 and the real cluster: a preload that waits for the
budget while requests arrive, and a reload that changes a loaded model while requests
keep coming. A request here is what the gateway does with one: the cluster read once,
a slot taken on the model (which loads it if needed), the chat call, the slot given back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from appliance.config import ApplianceConfig, load_config
from appliance.serving.cluster import Cluster, ClusterRef
from appliance.serving.reload import Reloader
from appliance.wire.openai.protocol import Endpoint
from tests.conftest import cluster_config
from tests.local.models import ASK, alive, smollm2
from tests.support.poll import until_async

BUDGET = {"memory_budget_mb": 350}  # one SmolLM2 at n_ctx 512 fits, two do not
ON_DEMAND = {"load": "on_demand", "preload": True, "queue_timeout_s": 120}


async def ask(ref: ClusterRef, model: str) -> str:
    cluster = ref.current
    cluster.enter()
    try:
        [group] = cluster.registry.resolve(model)
        worker = await group.acquire()
        try:
            body = {"model": model, "messages": ASK, "max_tokens": 4, "temperature": 0}
            reply = orjson.loads(await worker.call(Endpoint.CHAT, body))
        finally:
            group.release(worker)
        return str(reply["choices"][0]["finish_reason"])
    finally:
        await cluster.leave()


async def test_a_preload_waiting_for_the_budget_serves_the_requests_that_came_meanwhile() -> None:
    config = ApplianceConfig.model_validate(
        cluster_config(smollm2("a", **ON_DEMAND), smollm2("b", **ON_DEMAND), local=BUDGET)
    )
    cluster = Cluster.from_config(config)
    ref = ClusterRef(cluster)
    groups = cluster.registry.groups
    try:
        async with cluster.residency._lock:  # another load is making room: the preloads wait
            await cluster.start()
            states = {name: g.lifecycle.state for name, g in groups.items() if g.lifecycle}
            assert states == {"a": "loading", "b": "loading"}
            asked = [asyncio.ensure_future(ask(ref, m)) for m in ("b", "a", "b", "b")]
            await until_async(
                lambda: sum(g.dispatcher.queued for g in groups.values()) == 4,
                what="every request waiting for a load",
            )
        # `a` gets the room; `b`'s preload finds none, but its requests make it evict `a`
        # once `a` has served its own.
        answers = await asyncio.wait_for(asyncio.gather(*asked), 300)
        assert len(answers) == 4 and set(answers) <= {"stop", "length"}
        lifecycle = groups["b"].lifecycle
        assert lifecycle is not None and lifecycle.state == "loaded"
    finally:
        await cluster.close()


def write(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config))


@pytest.fixture
async def reloadable(tmp_path: Path) -> AsyncIterator[tuple[Path, ClusterRef, Reloader]]:
    path = tmp_path / "cluster.yaml"
    write(path, cluster_config(smollm2("m", **ON_DEMAND), local=BUDGET))
    cluster = Cluster.from_config(load_config(path, environ={}))
    ref = ClusterRef(cluster)
    await cluster.start()
    reloader = Reloader(ref, lambda: load_config(path, environ={}))
    try:
        yield path, ref, reloader
    finally:
        await reloader.stop()
        await ref.current.close()


async def test_a_reload_that_changes_a_model_under_a_budget_keeps_every_request_served(
    reloadable: tuple[Path, ClusterRef, Reloader],
) -> None:
    path, ref, reloader = reloadable
    old = ref.current.registry.groups["m"]
    assert old.lifecycle is not None
    await until_async(lambda: old.lifecycle and old.lifecycle.state == "loaded", what="preload")
    pid = old.workers[0].pid()
    assert pid is not None

    answers: list[str] = []
    stop = asyncio.Event()

    async def keep_asking() -> None:
        while not stop.is_set():
            answers.append(await ask(ref, "m"))

    asking = asyncio.ensure_future(keep_asking())
    await until_async(lambda: len(answers) >= 2, what="requests served before the reload")
    write(path, cluster_config(smollm2("m", idle_unload_s=600, **ON_DEMAND), local=BUDGET))
    outcome = await reloader.reload("test")
    assert outcome.ok and outcome.changed == ["m"]
    fresh = ref.current.registry.groups["m"]
    assert fresh is not old and fresh.lifecycle is not None
    # The budget is handed over whole: the old `m` counts until it is gone, and the new
    # one comes up only after that.
    assert ref.current.residency.retiring == [old.lifecycle]
    old_alive_when_up: list[bool] = []
    fresh.workers[0].watch(lambda w: old_alive_when_up.append(alive(pid)) if w.up else None)
    served_before = len(answers)
    # The new `m` waits for the old one to leave the budget, then loads and serves.
    await until_async(lambda: not alive(pid), what="the retired model's process gone")
    await until_async(lambda: len(answers) >= served_before + 2, what="served after the swap")
    stop.set()
    await asyncio.wait_for(asking, 120)  # no request failed: it would be raised here
    assert fresh.lifecycle.state == "loaded"
    assert old_alive_when_up == [False]
    assert ref.current.residency.retiring == []
