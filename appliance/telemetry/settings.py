"""Where spans go and how many: the ``telemetry:`` section with the standard ``OTEL_*``
variables.

What the YAML states wins; a variable fills in only what it leaves out:

- the collector: ``otlp_endpoint`` (a base URL: spans go to ``<base>/v1/traces``), else
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the full URL, used as it is), else
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL); none: tracing is off;
- ``service_name``, else ``OTEL_SERVICE_NAME``, else ``appliance``;
- ``sample_ratio``, else ``OTEL_TRACES_SAMPLER_ARG``, else 1;
- ``headers``, added to ``OTEL_EXPORTER_OTLP_HEADERS`` (a YAML header beats the same one
  there).

``OTEL_SDK_DISABLED=true`` turns tracing off whatever the YAML says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from appliance.config.telemetry import TRACES_PATH, TelemetryConfig

EXPORT_TIMEOUT_S = 2.0  # one export, retries included: a collector that hangs costs this
QUEUE_SPANS = 2048  # spans waiting for export; more are dropped (and counted)


@dataclass(frozen=True)
class Exporting:
    """Resolved tracing settings (see the module docstring)."""

    endpoint: str
    service_name: str = "appliance"
    sample_ratio: float = 1.0
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # secrets: never shown
    capture_content: bool = False
    timeout_s: float = EXPORT_TIMEOUT_S
    queue_spans: int = QUEUE_SPANS


def resolve(config: TelemetryConfig, environ: Mapping[str, str]) -> Exporting | None:
    """The tracing settings, or None when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    endpoint = _endpoint(config, environ)
    if endpoint is None:
        return None
    headers = _headers(environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or "")
    headers = {**_headers(environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""), **headers}
    headers.update({k: v.get_secret_value() for k, v in config.headers.items()})
    return Exporting(
        endpoint=endpoint,
        service_name=config.service_name or environ.get("OTEL_SERVICE_NAME") or "appliance",
        sample_ratio=_ratio(config.sample_ratio, environ.get("OTEL_TRACES_SAMPLER_ARG")),
        headers=headers,
        capture_content=config.capture_content,
    )


def _endpoint(config: TelemetryConfig, environ: Mapping[str, str]) -> str | None:
    if config.otlp_endpoint is not None:
        return config.otlp_endpoint + TRACES_PATH
    full = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    if full:
        return full
    base = (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip().rstrip("/")
    return base + TRACES_PATH if base else None


def _ratio(configured: float | None, variable: str | None) -> float:
    if configured is not None:
        return configured
    try:
        ratio = float(variable) if variable else 1.0
    except ValueError:
        return 1.0
    return min(1.0, max(0.0, ratio))


def _headers(text: str) -> dict[str, str]:
    """``OTEL_EXPORTER_OTLP_HEADERS``: ``name=value`` pairs, comma-separated, URL-encoded."""
    out: dict[str, str] = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if sep and name.strip():
            out[unquote(name.strip()).lower()] = unquote(value.strip())
    return out
