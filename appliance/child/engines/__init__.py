"""Engines: models that run in this process, inside a worker process.

An engine is synchronous and CPU-bound; the worker server runs it in a thread so that
its event loop keeps answering probes. One module per runtime.
"""

from __future__ import annotations

from appliance.child.engines.base import Engine
from appliance.config import ModelConfig
from appliance.config.backends import LlamaCppModel, OnnxModel


def load_engine(config: ModelConfig) -> Engine:
    """Load the model a local declaration names (this takes a while)."""
    if isinstance(config, LlamaCppModel):
        from appliance.child.engines.llama import LlamaEngine

        return LlamaEngine(config)
    if isinstance(config, OnnxModel):
        from appliance.child.engines.onnx import OnnxEngine

        return OnnxEngine(config)
    raise TypeError(f"backend {config.backend!r} has no local engine")


__all__ = ["Engine", "load_engine"]
