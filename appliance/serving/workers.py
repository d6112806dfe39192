"""Workers: one backend per module, built from a model declaration."""

from __future__ import annotations

from appliance.backends.base import ReplyStream, Worker
from appliance.backends.openai import OpenAIWorker, Upstream
from appliance.backends.scripted import ScriptedWorker
from appliance.config import ModelConfig, OpenAIModel, ScriptedModel
from appliance.config.backends import LlamaCppModel, OnnxModel
from appliance.local.threads import thread_share
from appliance.local.worker import LocalWorker

__all__ = ["ReplyStream", "Worker", "build_workers", "thread_share"]


def build_workers(config: ModelConfig, *, threads: int | None = None) -> list[Worker]:
    """The worker instances a model declaration asks for (not yet started).

    Args:
        config: The model's declaration.
        threads: Default ``n_threads`` of local workers (see :func:`thread_share`).
    """
    ids = [f"{config.name}/{i}" for i in range(config.workers)]
    if isinstance(config, ScriptedModel):
        return [ScriptedWorker(wid, config) for wid in ids]
    if isinstance(config, OpenAIModel):
        urls = config.options.base_url
        return [
            OpenAIWorker(wid, config, Upstream.of(config, urls[i % len(urls)]))
            for i, wid in enumerate(ids)
        ]
    if isinstance(config, LlamaCppModel | OnnxModel):
        return [LocalWorker(wid, config, threads) for wid in ids]
    raise TypeError(f"no worker for backend {config.backend!r}")
