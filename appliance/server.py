"""Running the app under Granian.

``server.processes: 1`` (the default) serves from this one process: Granian's embedded
server runs the app on this process's event loop (uvloop), and there is no second
interpreter to start or to keep in memory. More processes run under Granian's
multi-process server, each building the app from the environment (:data:`FACTORY`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from granian.constants import HTTPModes, Interfaces, Loops
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from appliance import eventloop, runtime
from appliance.config import ApplianceConfig
from appliance.logging import granian_log_config
from appliance.signals import DRAIN_SIGNAL, RELOAD_SIGNAL, ignore_until_handled

FACTORY = "appliance.app:app_from_environment"

log = structlog.get_logger("appliance.server")


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


def serve(config: ApplianceConfig, build: Callable[[], Any], pid_file: Path | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit status.

    ``build`` makes the app in this process (one process). With several processes each
    builds its own with :data:`FACTORY`, so the caller must have put the config's path and
    overrides into ``APPLIANCE_*`` environment variables. HTTP/1.1 only: Granian's
    automatic HTTP/2 detection waits for a new connection's first bytes without any time
    limit, so a client that connects and sends nothing would hold its connection forever.
    """
    pid_file = pid_file or default_pid_file(config.server.port)
    if config.server.processes == 1:
        return serve_in_process(config, build, pid_file)
    serve_processes(config, pid_file)
    return 0


def serve_processes(config: ApplianceConfig, pid_file: Path) -> None:
    """Granian's multi-process server: this process supervises, the workers serve."""
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
            pid_file=pid_file,
        )
        server.serve()
    finally:
        runtime.remove_folder(folder)


def serve_in_process(config: ApplianceConfig, build: Callable[[], Any], pid_file: Path) -> int:
    """Granian's embedded server on this process's loop: the app's own signal handlers
    (SIGHUP reloads, the drain signal) are this process's; SIGTERM/SIGINT start the drain
    and stop accepting, and in-flight requests finish within the drain time."""
    from granian.server.embed import Server

    ignore_until_handled()
    runtime.claim_pid_file(pid_file)
    server = Server(
        build,
        factory=True,
        address=config.server.host,
        port=config.server.port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        http1_settings=http1_settings(config),
        log_level=LogLevels(config.logging.level),
        log_dictconfig=granian_log_config(config.logging),
        log_access=False,
        # Granian's multi-process default. Requests in flight are capped at the backlog
        # (its "backpressure"), and the embedded server's own default of 128 would hold
        # the 129th open stream until another ends.
        backlog=1024,
    )
    server.workers_kill_timeout = math.ceil(config.server.drain_timeout_s) + 2
    logging.getLogger("_granian").addFilter(_NotExperimental())

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            os.kill(os.getpid(), DRAIN_SIGNAL)  # the app's handler starts the drain clock
            server.stop()  # type: ignore[no-untyped-call]

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, interrupt)
        await server.serve()

    try:
        eventloop.run(run())
    except TimeoutError:
        # Past the drain time every request is answered or ended (the app's Lifespan): a
        # request that still did not finish within the kill timeout was cut.
        log.error("shutdown_timeout", kill_timeout_s=server.workers_kill_timeout)
        return 1
    finally:
        runtime.release_pid_file(pid_file)
    # The server ends on its own only when its worker failed (logged by Granian).
    return 1 if server.interrupt_children else 0


class _NotExperimental(logging.Filter):
    """Drops Granian's warning that its embedded server is experimental: chosen knowingly
    (tested here for reload, drain and shutdown), and a warning at every start would only
    worry operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()
