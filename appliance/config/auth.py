"""The ``auth`` section of cluster.yaml: client API keys, what each may use and spend, and
the priority class its requests are scheduled in."""

from __future__ import annotations

import hashlib
import re
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from appliance.config.model import Strict

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

Priority = Literal["interactive", "standard", "batch"]


class BudgetConfig(Strict):
    """What a key may spend per calendar period (UTC), in ``billing.currency``."""

    amount: float = Field(gt=0, description="Spend allowed per period.")
    period: Literal["day", "week", "month"] = Field(
        "month", description="day, week (from Monday) or month; periods start at 00:00 UTC."
    )


class ApiKeyConfig(Strict):
    """One client API key. Give the key itself or its SHA-256."""

    name: str = Field(description="Label used in logs instead of the key.", min_length=1)
    key: SecretStr | None = Field(None, description="The key, usually `${ENV_VAR}`.")
    key_sha256: str | None = Field(None, description="Hex SHA-256 of the key.")
    models: list[str] | None = Field(
        None, description="Models and aliases this key may use; absent: all."
    )
    rpm: int | None = Field(None, ge=1, description="Requests per window (a minute) allowed.")
    tpm: int | None = Field(
        None, ge=1, description="Tokens per window (a minute), counted from replies' usage."
    )
    budget: BudgetConfig | None = Field(
        None,
        description="Spend allowed per period; past it: 429 `insufficient_quota` until the "
        "period resets. Needs priced models (`pricing`).",
    )
    priority: Priority = Field(
        "standard",
        description="Scheduling class of this key's requests when a model's slots are all "
        "taken: interactive before standard before batch, a fair share between the keys "
        "of one class, and at least one slot in ten to a lower class that waits (see the "
        "README's Scheduling). Requests without a key are standard.",
    )

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        if self.key is not None and not self.key.get_secret_value():
            raise ValueError("key is empty")
        if self.key_sha256 is not None and not _HEX64.match(self.key_sha256):
            raise ValueError("key_sha256 must be 64 hex digits")
        return self

    def digest(self) -> bytes:
        """The SHA-256 of the key, as bytes."""
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)


class AuthConfig(Strict):
    """Client authentication. No keys: the API is open."""

    api_keys: list[ApiKeyConfig] = Field(default_factory=list, description="Accepted keys.")
    window_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Length of the rpm/tpm window; 60 makes them per minute.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        return [] if value is None else value

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, keys: list[ApiKeyConfig]) -> list[ApiKeyConfig]:
        seen: set[str] = set()
        for key in keys:
            if key.name in seen:
                raise ValueError(f"two keys are named {key.name!r}")
            seen.add(key.name)
        return keys
