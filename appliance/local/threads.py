"""How many threads a local model's child computes with.

Every worker process of every Granian process is one child: a default ``n_threads`` is
the machine's cores shared out among them (:func:`thread_share`), so that several local
models, or several processes, do not oversubscribe the CPU.
"""

from __future__ import annotations

import os

from appliance.config import ApplianceConfig
from appliance.config.backends import LlamaCppModel, OnnxModel


def available_cpus() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def thread_share(config: ApplianceConfig, cpus: int | None = None) -> int:
    """The default ``n_threads`` of a local worker: the cores over all local workers.

    Every Granian process starts its own local workers, so they count once per process.
    """
    cpus = available_cpus() if cpus is None else cpus
    local = sum(m.workers for m in config.models if isinstance(m, LlamaCppModel | OnnxModel))
    return max(1, cpus // max(1, local * config.server.processes))


def with_threads(
    config: LlamaCppModel | OnnxModel, threads: int | None
) -> LlamaCppModel | OnnxModel:
    """The declaration the child gets: ``n_threads`` filled in when it was left out."""
    if threads is None or config.options.n_threads is not None:
        return config
    options = config.options.model_copy(update={"n_threads": threads})
    return config.model_copy(update={"options": options})
