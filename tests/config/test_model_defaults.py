"""Per-backend defaults: proxies are not capped, local models are required for readiness."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from appliance.config import ModelConfig
from appliance.config.model import ModelBase

LOCAL_FILE = {"path": "/models/x.gguf"}
DECLARATIONS: dict[str, dict[str, Any]] = {
    "scripted": {"name": "s", "backend": "scripted"},
    "openai": {"name": "o", "backend": "openai", "options": {"base_url": "http://h:1/v1"}},
    "llama_cpp": {"name": "l", "backend": "llama_cpp", "options": {"model": LOCAL_FILE}},
    "onnx": {
        "name": "x",
        "backend": "onnx",
        "options": {"model": LOCAL_FILE, "tokenizer": {"path": "/t.json"}},
    },
}


def model(backend: str, **fields: Any) -> Any:
    return TypeAdapter(ModelConfig).validate_python({**DECLARATIONS[backend], **fields})


@pytest.mark.parametrize(
    ("backend", "cap", "required"),
    [("scripted", None, False), ("openai", None, False), ("llama_cpp", 1, True), ("onnx", 1, True)],
)
def test_defaults_per_backend(backend: str, cap: int | None, required: bool) -> None:
    declared = model(backend)
    assert declared.max_concurrency == cap
    assert declared.needed_for_readiness is required


@pytest.mark.parametrize("backend", list(DECLARATIONS))
def test_required_and_max_concurrency_can_be_given(backend: str) -> None:
    declared = model(backend, max_concurrency=8, required=not model(backend).needed_for_readiness)
    assert declared.max_concurrency == 8
    assert declared.needed_for_readiness is not model(backend).needed_for_readiness


def test_the_new_fields_are_described() -> None:
    for name in ("max_concurrency", "required"):
        description = ModelBase.model_fields[name].description or ""
        assert "openai" in description, name
