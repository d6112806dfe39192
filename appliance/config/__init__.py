"""cluster.yaml: schema, loader and environment overrides."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from appliance.config.auth import ApiKeyConfig, AuthConfig, Priority
from appliance.config.backends import (
    ModelConfig,
    OpenAIModel,
    OpenAIOptions,
    ScriptedModel,
    ScriptedOptions,
)
from appliance.config.loader import Check, load_config, parse_config
from appliance.config.model import LocatedValueError, ModelType
from appliance.config.schema import (
    ApplianceConfig,
    LoggingConfig,
    RouteConfig,
    ServerConfig,
)
from appliance.config.settings import Settings
from appliance.config.tls import TlsConfig, tls_problems

__all__ = [
    "ApiKeyConfig",
    "ApplianceConfig",
    "AuthConfig",
    "Check",
    "LoggingConfig",
    "ModelConfig",
    "ModelType",
    "OpenAIModel",
    "OpenAIOptions",
    "Priority",
    "RouteConfig",
    "ScriptedModel",
    "ScriptedOptions",
    "ServerConfig",
    "Settings",
    "TlsConfig",
    "load_config",
    "load_from_environment",
    "parse_config",
    "tls_files",
]


def tls_files(config: ApplianceConfig) -> list[LocatedValueError]:
    """A :data:`Check` for a config to be served: ``server.tls``'s files load together
    (:func:`appliance.config.tls.tls_problems`)."""
    return tls_problems(config.server.tls)


def load_from_environment(
    checks: Sequence[Check] = (), **flags: object
) -> tuple[Settings, ApplianceConfig]:
    """Load the config named by ``APPLIANCE_CONFIG`` with every ``APPLIANCE_*`` override.

    Args:
        checks: Checks of the valid config beyond its text (see :data:`Check`).
        flags: Command-line values (``port=9000``); they beat the environment.
    """
    given: dict[str, Any] = {k: str(v) for k, v in flags.items() if v is not None}
    settings = Settings(**given)
    config = load_config(
        settings.config, environ=os.environ, overrides=settings.overrides(), checks=checks
    )
    return settings, config
