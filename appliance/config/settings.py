"""Environment overrides of cluster.yaml, read with pydantic-settings.

Precedence: command line beats environment beats YAML. The command line works by setting
these variables, so Granian's worker processes, which build the app themselves, see the
same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from appliance.config.loader import Loc

ENV_PREFIX = "APPLIANCE_"

# Each override: settings field -> where in cluster.yaml it lands.
OVERRIDES: dict[str, Loc] = {
    "host": ("server", "host"),
    "port": ("server", "port"),
    "processes": ("server", "processes"),
    "max_body_bytes": ("server", "max_body_bytes"),
    "log_level": ("logging", "level"),
    "log_format": ("logging", "format"),
}


class Settings(BaseSettings):
    """``APPLIANCE_*`` environment variables.

    Values stay strings here; the config schema validates them, and its errors name the
    variable they came from.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    config: Path = Path("configs/cluster.yaml")
    host: str | None = None
    port: str | None = None
    processes: str | None = None
    max_body_bytes: str | None = None
    log_level: str | None = None
    log_format: str | None = None

    def overrides(self) -> dict[Loc, tuple[str, Any]]:
        """The overrides in the form :func:`load_config` takes."""
        out: dict[Loc, tuple[str, Any]] = {}
        for field, loc in OVERRIDES.items():
            value = getattr(self, field)
            if value is not None:
                out[loc] = (ENV_PREFIX + field.upper(), value)
        return out

    def export(self) -> dict[str, str]:
        """These settings as ``APPLIANCE_*`` variables, for processes started later."""
        out = {ENV_PREFIX + "CONFIG": str(self.config)}
        for field in OVERRIDES:
            value = getattr(self, field)
            if value is not None:
                out[ENV_PREFIX + field.upper()] = value
        return out
