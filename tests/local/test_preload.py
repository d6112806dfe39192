"""``preload``: an on-demand model warms up at start, if it fits without unloading another."""

from __future__ import annotations

from structlog.testing import capture_logs

from appliance.config import ApplianceConfig
from appliance.serving.cluster import Cluster
from tests.conftest import cluster_config
from tests.local.models import smollm2
from tests.support.poll import until_async


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
            await until_async(
                lambda: (
                    [g.lifecycle.state for g in groups.values() if g.lifecycle]
                    == ["loaded", "unloaded"]
                ),
                timeout=60,
                what="hot loaded and cold not",
            )
        finally:
            await cluster.close()
    skipped = [e for e in logs if e["event"] == "model_preload_skipped"]
    assert [e["model"] for e in skipped] == ["cold"]
