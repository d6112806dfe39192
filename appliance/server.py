"""Running the app under Granian."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from appliance import runtime
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
    told to start their drain clock (see :mod:`appliance.signals`). The worker processes
    are found in the runtime folder where each registers itself (:mod:`appliance.runtime`).
    """

    def __init__(self, *args: Any, runtime_folder: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime_folder = runtime_folder

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        runtime.signal_all(self.runtime_folder, RELOAD_SIGNAL)

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        runtime.signal_all(self.runtime_folder, DRAIN_SIGNAL)
        super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]


def http1_settings(config: ApplianceConfig) -> HTTP1Settings:
    """Granian's HTTP/1 settings from ``server:``.

    ``header_read_timeout`` closes a connection that has not sent a whole request head in
    time, which covers a new connection that sends nothing and a kept-alive one left idle.
    Header size limits are left at Granian's generous default (about 400 KiB): the app
    answers lower limits itself, as an envelope that is logged and counted
    (:mod:`appliance.api.access`).
    """
    return HTTP1Settings(header_read_timeout=math.ceil(config.server.header_timeout_s * 1000))


def serve(config: ApplianceConfig, pid_file: Path | None = None) -> None:
    """Serve until SIGTERM/SIGINT. Each Granian process builds the app with :data:`FACTORY`.

    The caller must have put the config's path and overrides into ``APPLIANCE_*``
    environment variables, which the worker processes read. HTTP/1.1 only: Granian's
    automatic HTTP/2 detection waits for a new connection's first bytes without any time
    limit, so a client that connects and sends nothing would hold its connection forever.
    """
    folder = runtime.create_folder(config.server.port)
    os.environ[runtime.RUNTIME_ENV] = str(folder)
    try:
        server = ApplianceServer(
            FACTORY,
            runtime_folder=folder,
            factory=True,
            address=config.server.host,
            port=config.server.port,
            interface=Interfaces.ASGI,
            http=HTTPModes.http1,
            http1_settings=http1_settings(config),
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
    finally:
        runtime.remove_folder(folder)
