"""The ``telemetry:`` section: OpenTelemetry traces sent to an OTLP/HTTP collector.

Tracing is off unless a collector is named, here (``otlp_endpoint``) or by the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` variables. What the
YAML states wins; the ``OTEL_*`` variables fill in what it leaves out
(:mod:`appliance.telemetry.settings` resolves the two).
"""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from appliance.config.credentials import url_secrets
from appliance.config.model import Strict

TRACES_PATH = "/v1/traces"  # what the exporter adds to a base URL


class TelemetryConfig(Strict):
    """OpenTelemetry traces (OTLP over HTTP, protobuf). Off unless a collector is named."""

    otlp_endpoint: str | None = Field(
        None,
        description=(
            "The collector's base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`: spans go to "
            "`<base>/v1/traces` (a URL ending in `/v1/traces` is refused). None: tracing is "
            "off (unless an `OTEL_*` variable names one)."
        ),
    )
    service_name: str | None = Field(
        None,
        min_length=1,
        description="The traces' `service.name`; None: `OTEL_SERVICE_NAME`, else `appliance`.",
    )
    sample_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description=(
            "Share of new traces kept (parent-based: a caller's sampled trace is kept); "
            "None: `OTEL_TRACES_SAMPLER_ARG`, else 1."
        ),
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Headers sent to the collector (its auth, usually `${ENV_VAR}`), never logged; "
            "added to `OTEL_EXPORTER_OTLP_HEADERS`, which they beat."
        ),
    )
    capture_content: bool = Field(
        False, description="Put prompts and replies in the model calls' spans (off: never)."
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        base = value.rstrip("/")
        if base.endswith(TRACES_PATH):
            raise ValueError(
                f"{value!r} is a traces URL, but otlp_endpoint is the collector's base URL "
                f"(spans go to <base>{TRACES_PATH}): write "
                f"{base.removesuffix(TRACES_PATH) or 'http://host:4318'!r} (a full traces URL "
                "goes in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)"
            )
        return base

    def secrets(self) -> list[str]:
        """The header values and the endpoint's userinfo, for log redaction."""
        values = [value.get_secret_value() for value in self.headers.values()]
        return values + url_secrets(self.otlp_endpoint)
