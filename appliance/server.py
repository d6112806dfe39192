"""Running the app under Granian."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from granian.constants import Interfaces, Loops
from granian.log import LogLevels
from granian.server.mp import MPServer

from appliance.config import ApplianceConfig
from appliance.logging import granian_log_config
from appliance.signals import DRAIN_SIGNAL, RELOAD_SIGNAL

FACTORY = "appliance.app:app_from_environment"


def default_pid_file(port: int) -> Path:
    """Where ``serve`` records the main PID and ``reload`` finds it."""
    return Path(tempfile.gettempdir()) / f"appliance-{port}.pid"


class ApplianceServer(MPServer):
    """Granian's server, with SIGHUP meaning "reload the config in place".

    Granian's own SIGHUP respawns every worker process, which would reload every local
    model. Instead the signal is passed to each worker process, whose reloader swaps in
    the new config and carries unchanged models over. On SIGTERM/SIGINT the workers are
    told to start their drain clock (see :mod:`appliance.signals`).
    """

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        self._tell_workers(RELOAD_SIGNAL)

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        self._tell_workers(DRAIN_SIGNAL)
        super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]

    def _tell_workers(self, sig: int) -> None:
        for worker in list(self.wrks):
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(worker._id(), sig)  # type: ignore[no-untyped-call]


def serve(config: ApplianceConfig, pid_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Each Granian process builds the app with :data:`FACTORY`.

    The caller must have put the config's path and overrides into ``APPLIANCE_*``
    environment variables, which the worker processes read.
    """
    server = ApplianceServer(
        FACTORY,
        factory=True,
        address=config.server.host,
        port=config.server.port,
        interface=Interfaces.ASGI,
        loop=Loops.auto,  # uvloop (a dependency) where it runs; asyncio elsewhere
        workers=config.server.processes,
        log_level=LogLevels(config.logging.level),
        log_dictconfig=granian_log_config(config.logging),
        log_access=False,
        respawn_failed_workers=True,
        # In-flight requests get drain_timeout_s after SIGTERM; then the process goes.
        workers_kill_timeout=math.ceil(config.server.drain_timeout_s) + 2,
        pid_file=pid_file or default_pid_file(config.server.port),
    )
    server.serve()
