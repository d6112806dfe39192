"""Running the app under Granian.

``server.processes: 1`` (the default) serves from this one process: Granian's embedded
server runs the app on this process's event loop (uvloop), and there is no second
interpreter to start or to keep in memory. More processes run under Granian's
multi-process server, each building the app from the environment with the factory that
the caller names (the CLI names :func:`appliance.http.app.app_from_environment`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
from granian.errors import FatalError
from granian.http import HTTP1Settings
from granian.log import LogLevels
from granian.server.mp import MPServer

from appliance.config import ApplianceConfig
from appliance.runtime import address, eventloop
from appliance.runtime import processes as runtime
from appliance.runtime.logging import granian_log_config
from appliance.runtime.pidfile import claim_pid_file
from appliance.runtime.signals import DRAIN_SIGNAL, RELOAD_SIGNAL, ignore_until_handled

log = structlog.get_logger("appliance.server")


def default_pid_file(port: int) -> Path:
    """Where ``serve`` records the main PID and ``reload`` finds it."""
    return Path(tempfile.gettempdir()) / f"appliance-{port}.pid"


class ApplianceServer(MPServer):
    """Granian's server, with SIGHUP meaning "reload the config in place".

    Granian's own SIGHUP respawns every worker process, which would reload every local
    model. Instead the signal is passed to each worker process, whose reloader swaps in
    the new config and carries unchanged models over. On SIGTERM/SIGINT the workers are
    told to start their drain clock (see :mod:`appliance.runtime.signals`). The worker
    processes are found in the runtime folder where each registers itself
    (:mod:`appliance.runtime.processes`).
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
    (:mod:`appliance.http.access`).
    """
    return HTTP1Settings(header_read_timeout=math.ceil(config.server.header_timeout_s * 1000))


def tls_options(config: ApplianceConfig) -> dict[str, Any]:
    """Granian's TLS options from ``server.tls`` (none without it).

    Granian's Rust side reads the files when each serving process starts and keeps them
    for its life (so a replaced certificate needs a restart). With a ``ca_file`` every
    client must present a certificate signed by it.
    """
    tls = config.server.tls
    if tls is None:
        return {}
    return {
        "ssl_cert": tls.cert_file,
        "ssl_key": tls.key_file,
        "ssl_protocol_min": SSLProtocols(f"tls{tls.min_version}"),
        "ssl_ca": tls.ca_file,
        "ssl_client_verify": tls.ca_file is not None,
    }


def granian_options(config: ApplianceConfig) -> dict[str, Any]:
    """What both Granian servers (one process or several) are given alike: the factory
    mode, address, ASGI over HTTP/1.1 only, the header timeout, TLS and logging."""
    return {
        **tls_options(config),
        "factory": True,
        "address": config.server.host,
        "port": config.server.port,
        "interface": Interfaces.ASGI,
        "http": HTTPModes.http1,
        "http1_settings": http1_settings(config),
        "log_level": LogLevels(config.logging.level),
        "log_dictconfig": granian_log_config(config.logging),
        "log_access": False,
    }


def serve(
    config: ApplianceConfig, build: Callable[[], Any], factory: str, pid_file: Path | None = None
) -> int:
    """Serve until SIGTERM/SIGINT; the exit status.

    ``build`` makes the app in this process (one process). With several processes each
    builds its own by calling ``factory`` (``"module:function"``), so the caller must have
    put the config's path and overrides into ``APPLIANCE_*`` environment variables.
    HTTP/1.1 only: Granian's automatic HTTP/2 detection waits for a new connection's first
    bytes without any time limit, so a client that connects and sends nothing would hold
    its connection forever.

    Refused (:class:`~appliance.runtime.address.AddressError`,
    :class:`~appliance.runtime.pidfile.PidFileError`) while the address is in use or
    another running server holds the PID file.
    """
    ignore_until_handled()  # a reload signal once the PID file names this process
    host, port = config.server.host, config.server.port
    held_address = address.claim(host, port)
    try:
        held_pid = claim_pid_file(pid_file or default_pid_file(port))
        try:
            if config.server.processes == 1:
                return serve_in_process(config, build)
            serve_processes(config, factory)
            return 0
        except RuntimeError as exc:
            # Granian's own bind, failed after the probe passed (someone bound it since).
            if not _OS_ERROR.search(str(exc)):
                raise
            shown = address.shown(host, port)
            raise address.AddressError(f"cannot listen on {shown}: {exc}") from None
        finally:
            held_pid.close()
    finally:
        held_address.close()


# How an OS error from Granian's Rust side (its bind) reads: "... (os error 98)".
_OS_ERROR = re.compile(r"\(os error \d+\)$")


def serve_processes(config: ApplianceConfig, factory: str) -> None:
    """Granian's multi-process server: this process supervises, the workers serve."""
    folder = runtime.create_folder(config.server.port)
    os.environ[runtime.RUNTIME_ENV] = str(folder)
    try:
        server = ApplianceServer(
            factory,
            runtime_folder=folder,
            **granian_options(config),
            loop=Loops.auto,  # uvloop (a dependency) where it runs; asyncio elsewhere
            workers=config.server.processes,
            respawn_failed_workers=True,
            # In-flight requests get drain_timeout_s after SIGTERM (then the app ends or
            # answers them), the app's shutdown the grace; then the process goes.
            workers_kill_timeout=kill_timeout_s(config),
        )
        server.serve()
    finally:
        runtime.remove_folder(folder)


def serve_in_process(config: ApplianceConfig, build: Callable[[], Any]) -> int:
    """Granian's embedded server on this process's loop: the app's own signal handlers
    (SIGHUP reloads, the drain signal) are this process's; SIGTERM/SIGINT start the drain
    and stop accepting, and in-flight requests finish within the drain time."""
    from granian.server.embed import Server

    server = Server(
        build,
        **granian_options(config),
        # Granian's multi-process default. Requests in flight are capped at the backlog
        # (its "backpressure"), and the embedded server's own default of 128 would hold
        # the 129th open stream until another ends.
        backlog=1024,
    )
    # Granian's embedded join would cancel the app at its kill timeout and skip the app's
    # shutdown (the ledger's last rows, the models' processes): it waits instead, and a
    # watchdog ends a process that is still stuck past the same limit.
    server.workers_kill_timeout = None
    logging.getLogger("_granian").addFilter(_NotExperimental())
    watchdog = Watchdog(kill_timeout_s(config))

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            watchdog.start()
            os.kill(os.getpid(), DRAIN_SIGNAL)  # the app's handler starts the drain clock
            server.stop()  # type: ignore[no-untyped-call]

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, interrupt)
        await server.serve()

    try:
        eventloop.run(run())
    except FatalError:
        return 1  # the app did not start; Granian logged why
    return 0


def kill_timeout_s(config: ApplianceConfig) -> int:
    """How long after SIGTERM a serving process may take before it is ended by force:
    the drain time, then a grace for the app's shutdown (stopping local models' processes,
    writing the ledger)."""
    return math.ceil(config.server.drain_timeout_s) + SHUTDOWN_GRACE_S


SHUTDOWN_GRACE_S = 10


class Watchdog:
    """Ends this process if a shutdown is still running ``limit_s`` after it began."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        if self._timer is None:
            self._timer = threading.Timer(self.limit_s, self._expire)
            self._timer.daemon = True
            self._timer.start()

    def _expire(self) -> None:
        log.error("shutdown_timeout", limit_s=self.limit_s, action="exit")
        os._exit(1)


class _NotExperimental(logging.Filter):
    """Drops Granian's warning that its embedded server is experimental: chosen knowingly
    (tested here for reload, drain and shutdown), and a warning at every start would only
    worry operators."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "experimental" not in record.getMessage()
