"""Which settings win: the YAML's, then the standard ``OTEL_*`` variables, then defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from appliance.config.telemetry import TelemetryConfig
from appliance.telemetry.settings import resolve


def config(**fields: Any) -> TelemetryConfig:
    return TelemetryConfig.model_validate(fields)


def test_off_unless_a_collector_is_named() -> None:
    assert resolve(config(), {}) is None
    assert resolve(config(service_name="x", sample_ratio=0.5), {"OTEL_SERVICE_NAME": "y"}) is None


def test_the_yaml_base_url_gets_the_traces_path_and_defaults() -> None:
    found = resolve(config(otlp_endpoint="http://collector:4318/"), {})
    assert found is not None
    assert found.endpoint == "http://collector:4318/v1/traces"
    assert (found.service_name, found.sample_ratio, found.capture_content) == (
        "appliance",
        1,
        False,
    )


def test_the_variables_fill_in_what_the_yaml_leaves_out() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
        "OTEL_SERVICE_NAME": "gateway",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer%20abc,x-team=ml",
    }
    found = resolve(config(), environ)
    assert found is not None
    assert found.endpoint == "http://base:4318/v1/traces"
    assert (found.service_name, found.sample_ratio) == ("gateway", 0.25)
    assert found.headers == {"authorization": "Bearer abc", "x-team": "ml"}
    # The signal's own variable is a full URL, used as it is, and beats the base.
    full = resolve(config(), {**environ, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t/x"})
    assert full is not None and full.endpoint == "http://t/x"


def test_the_yaml_wins_over_the_variables() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
        "OTEL_SERVICE_NAME": "gateway",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
        "OTEL_EXPORTER_OTLP_HEADERS": "authorization=from-env,x-team=ml",
    }
    found = resolve(
        config(
            otlp_endpoint="https://yaml:4318",
            service_name="mine",
            sample_ratio=0,
            headers={"authorization": "from-yaml"},
        ),
        environ,
    )
    assert found is not None
    assert found.endpoint == "https://yaml:4318/v1/traces"
    assert (found.service_name, found.sample_ratio) == ("mine", 0)
    assert found.headers == {"authorization": "from-yaml", "x-team": "ml"}
    assert "from-yaml" not in repr(found)  # headers are secrets


def test_otel_sdk_disabled_turns_it_off() -> None:
    named = config(otlp_endpoint="http://collector:4318")
    assert resolve(named, {"OTEL_SDK_DISABLED": "true"}) is None


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        config(otlp_endpoint="collector:4318")
    with pytest.raises(ValidationError):
        config(sample_ratio=1.5)
    found = resolve(
        config(), {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://b", "OTEL_TRACES_SAMPLER_ARG": "x"}
    )
    assert found is not None and found.sample_ratio == 1


def test_header_values_are_redacted_from_logs() -> None:
    from appliance.config import ApplianceConfig

    full = ApplianceConfig.model_validate(
        {
            "models": [{"name": "bot", "backend": "scripted"}],
            "telemetry": {"otlp_endpoint": "http://c", "headers": {"authorization": "s3cret"}},
        }
    )
    assert "s3cret" in full.secrets()


def test_a_reload_that_changes_telemetry_says_a_restart_is_needed() -> None:
    from appliance.config import ApplianceConfig
    from appliance.serving.reload_plan import read_at_start

    def full(telemetry: dict[str, Any]) -> ApplianceConfig:
        models = [{"name": "bot", "backend": "scripted"}]
        return ApplianceConfig.model_validate({"models": models, "telemetry": telemetry})

    started = full({"otlp_endpoint": "http://c"})
    assert read_at_start(started, full({"otlp_endpoint": "http://c"})) == []
    assert read_at_start(started, full({"otlp_endpoint": "http://d"})) == ["telemetry"]


def test_a_traces_url_as_otlp_endpoint_fails_appliance_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full traces URL would export to ``.../v1/traces/v1/traces`` (404, every span
    dropped): ``appliance check`` refuses it and says what to write instead."""
    from appliance.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "m", "backend": "scripted"}],
                "telemetry": {"otlp_endpoint": "http://127.0.0.1:4318/v1/traces/"},
            }
        )
    )
    status = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    assert status != 0 and "Traceback" not in out + err
    assert "otlp_endpoint is the collector's base URL" in out + err
    assert "'http://127.0.0.1:4318'" in out + err  # what to write instead
    # A base URL with a path of its own is fine; the traces variable stays a full URL.
    found = resolve(config(otlp_endpoint="https://c/otlp"), {})
    assert found is not None and found.endpoint == "https://c/otlp/v1/traces"
    full = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}
    found = resolve(config(), full)
    assert found is not None and found.endpoint == "http://127.0.0.1:4318/v1/traces"
