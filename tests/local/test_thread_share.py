"""Local workers share the cores: a default n_threads that does not oversubscribe."""

from __future__ import annotations

from typing import Any

import orjson

from appliance.config import ApplianceConfig
from appliance.config.backends import LlamaCppModel
from appliance.local.threads import thread_share
from appliance.local.worker import LocalWorker

GGUF = {"path": "/models/x.gguf"}


def llama(name: str, **fields: Any) -> dict[str, Any]:
    options = {"model": GGUF, **fields.pop("options", {})}
    return {"name": name, "backend": "llama_cpp", "options": options, **fields}


def config(*models: dict[str, Any], processes: int = 1) -> ApplianceConfig:
    return ApplianceConfig.model_validate(
        {"server": {"processes": processes}, "models": list(models)}
    )


def test_cores_are_shared_over_local_workers_and_processes() -> None:
    two_models = config(llama("a", workers=2), llama("b"), {"name": "s", "backend": "scripted"})
    assert thread_share(two_models, cpus=12) == 4  # 3 local workers; scripted ones use none
    assert thread_share(config(llama("a"), processes=4), cpus=16) == 4
    assert thread_share(config(llama("a", workers=4), processes=4), cpus=2) == 1


def test_the_child_gets_the_share_unless_n_threads_is_given() -> None:
    default = LlamaCppModel.model_validate(llama("a"))
    explicit = LlamaCppModel.model_validate(llama("b", options={"n_threads": 7}))

    def spec_threads(worker: LocalWorker) -> Any:
        return orjson.loads(worker.spec.model_dump_json())["options"]["n_threads"]

    assert spec_threads(LocalWorker("a/0", default, threads=3)) == 3
    assert spec_threads(LocalWorker("b/0", explicit, threads=3)) == 7
    assert LocalWorker("a/0", default, threads=3).spec.name == "a"
    assert default.options.n_threads is None, "the declaration itself is not changed"
