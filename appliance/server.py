"""Running the app under Granian."""

from __future__ import annotations

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server import Server

from appliance.config import ApplianceConfig
from appliance.logging import granian_log_config

FACTORY = "appliance.app:app_from_environment"


def serve(config: ApplianceConfig) -> None:
    """Serve until stopped. Each Granian process builds the app with :data:`FACTORY`.

    The caller must have put the config's path and overrides into ``APPLIANCE_*``
    environment variables, which the worker processes read.
    """
    server = Server(
        FACTORY,
        factory=True,
        address=config.server.host,
        port=config.server.port,
        interface=Interfaces.ASGI,
        workers=config.server.processes,
        log_level=LogLevels(config.logging.level),
        log_dictconfig=granian_log_config(config.logging),
        log_access=False,
        respawn_failed_workers=True,
    )
    server.serve()
