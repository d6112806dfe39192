"""README, Local models: "a child exits if its parent dies".

The appliance is killed with SIGKILL (nothing of it runs to stop its workers); the local
model's worker process, a real ONNX model loaded, must notice and exit on its own.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from tests.conftest import cluster_config
from tests.local.models import alive, minilm, worker_processes
from tests.support.poll import until
from tests.support.server import RunningServer


def test_a_model_worker_exits_when_the_appliance_is_killed(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(cluster_config(minilm("orphan-check", workers=1)))
    workers = until(lambda: worker_processes(server.process.pid), what="the model's worker process")
    assert len(workers) == 1, workers
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait(30)
    try:
        until(
            lambda: not any(alive(pid) for pid in workers),
            timeout=60,
            what="the orphaned worker exiting on its own",
        )
        # It said why (its log lines go where the appliance's went).
        until(
            lambda: server.events("worker_orphaned", model="orphan-check"),
            what="the worker's worker_orphaned event",
        )
    finally:
        for pid in workers:  # never leave one behind, whatever the outcome
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
