"""The memory budget in the config: estimates from the model files, and what cannot fit."""

from __future__ import annotations

from typing import Any

import pytest

from appliance.config import parse_config
from appliance.config.backends import LlamaCppModel
from appliance.errors import ConfigError
from appliance.local import CONFIG_CHECKS, memory
from tests.local.models import minilm, smollm2


def config_text(models: list[dict[str, Any]], budget: int) -> str:
    import yaml

    return yaml.safe_dump({"local": {"memory_budget_mb": budget}, "models": models})


def test_smollm2_estimate_reads_its_kv_cache_from_the_gguf_header() -> None:
    model = LlamaCppModel.model_validate(smollm2("s"))
    estimate = memory.estimate(model)
    assert estimate is not None
    # SmolLM2-135M: 30 layers x 3 KV heads x (64 + 64) x 2 bytes per token of context.
    kv_mb = 512 * 30 * 3 * 128 * 2 / memory.MB
    assert estimate.context_mb == pytest.approx(kv_mb + 32, abs=0.01)
    assert 90 < estimate.files_mb < 100  # the 94 MB file
    assert estimate.workers == 1


def test_a_model_that_cannot_fit_alone_is_a_config_error_naming_the_figures() -> None:
    with pytest.raises(ConfigError) as caught:
        models = [smollm2("small"), minilm("big", load="on_demand")]
        parse_config(checks=CONFIG_CHECKS, text=config_text(models, 600), environ={})
    [problem] = caught.value.problems
    assert problem.startswith("models[1] (line ")
    assert "'big' needs about" in problem
    assert "more than the memory budget of 600 MB" in problem
    assert "runtime 250 + files 22 + context" in problem


def test_startup_models_that_cannot_fit_together_are_a_config_error() -> None:
    models = [smollm2("a"), smollm2("b"), smollm2("c", load="on_demand")]
    with pytest.raises(ConfigError) as caught:
        parse_config(checks=CONFIG_CHECKS, text=config_text(models, 300), environ={})
    [problem] = caught.value.problems
    assert problem.startswith("local.memory_budget_mb (line ")
    assert "`load: startup` models need about 434 MB together" in problem


def test_on_demand_models_may_together_exceed_the_budget() -> None:
    models = [smollm2("a", load="on_demand"), smollm2("b", load="on_demand")]
    config = parse_config(checks=CONFIG_CHECKS, text=config_text(models, 300), environ={})
    assert config.local.memory_budget_mb == 300


def test_preload_is_for_on_demand_models() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            checks=CONFIG_CHECKS, text=config_text([smollm2("a", preload=True)], 300), environ={}
        )
    assert "models[0].preload" in caught.value.problems[0]
