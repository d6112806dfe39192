"""``preload``: an on-demand model warms up at start, if it fits without unloading another."""

from __future__ import annotations

import asyncio

from structlog.testing import capture_logs

from appliance.config import ApplianceConfig
from appliance.serving.cluster import Cluster
from tests.conftest import cluster_config
from tests.local.models import smollm2


async def test_preload_loads_what_fits_and_skips_what_would_evict() -> None:
    preload = {"load": "on_demand", "preload": True}
    config = ApplianceConfig.model_validate(
        cluster_config(
            smollm2("warm", **preload),
            smollm2("cold", **preload),
            local={"memory_budget_mb": 350},  # one SmolLM2 fits, two do not
        )
    )
    cluster = Cluster.from_config(config)
    groups = cluster.registry.groups
    with capture_logs() as logs:
        await cluster.start()
        try:
            for _ in range(1200):
                states = [g.lifecycle.state for g in groups.values() if g.lifecycle]
                if states == ["loaded", "unloaded"]:
                    break
                await asyncio.sleep(0.05)
            assert states == ["loaded", "unloaded"]
        finally:
            await cluster.close()
    skipped = [e for e in logs if e["event"] == "model_preload_skipped"]
    assert [e["model"] for e in skipped] == ["cold"]
