"""``ApplianceConfig.secrets()``: every credential the config sends anywhere, for redaction.

Upstream credentials live outside ``options.api_key`` too: in a ``base_url``'s userinfo
(sent as Basic auth) and in configured headers (Azure's ``api-key``, ``Authorization``).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from appliance.config import ApplianceConfig, parse_config
from appliance.config.credentials import header_secrets, secret_header, url_secrets
from appliance.errors import ConfigError
from appliance.runtime.redaction import REDACTED, Redactor


def config(*models: dict[str, Any], **sections: Any) -> ApplianceConfig:
    return ApplianceConfig.model_validate({"models": list(models), **sections})


def upstream(**options: Any) -> dict[str, Any]:
    return {"name": "up", "backend": "openai", "options": {"base_url": "http://h:1/v1", **options}}


def test_a_base_url_password_is_a_secret_in_every_form_it_travels() -> None:
    found = config(upstream(base_url="http://bob:hunter2-Passw0rd@h:1/v1")).secrets()
    basic = base64.b64encode(b"bob:hunter2-Passw0rd").decode()  # the header aiohttp sends
    assert {"hunter2-Passw0rd", "bob:hunter2-Passw0rd", basic} <= set(found)
    assert "bob" not in found  # the user alone is no secret (it would mangle every log)


def test_a_percent_encoded_password_is_a_secret_as_written_and_as_sent() -> None:
    found = url_secrets("https://bob:p%40ss%3Aw0rd@h/v1")
    assert {"p%40ss%3Aw0rd", "p@ss:w0rd", "bob:p@ss:w0rd"} <= set(found)
    assert base64.b64encode(b"bob:p@ss:w0rd").decode() in found


def test_each_url_of_a_list_and_a_token_as_user_are_secrets() -> None:
    urls = ["http://a:first-password@h:1/v1", "http://only-a-token@h:2/v1"]
    found = config(upstream(base_url=urls)).secrets()
    assert {"first-password", "only-a-token"} <= set(found)


def test_a_url_without_userinfo_has_no_secrets() -> None:
    assert url_secrets("http://h:1/v1") == []
    assert url_secrets("http://h:1/v1?next=a@b") == []  # an @ past the host is no userinfo


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api-key", "azure-key-0123456789"),
        ("x-api-key", "anthropic-key-0123"),
        ("Ocp-Apim-Subscription-Key", "apim-0123456789"),
        ("X-Auth-Token", "tok-0123456789"),
        ("Cookie", "session=abc0123456789"),
        ("cf-access-client-secret", "cf-0123456789"),
        ("X-Custom", "Bearer sk-custom-0123456789"),  # a scheme says it is a credential
    ],
)
def test_secret_headers_values_are_secrets(name: str, value: str) -> None:
    assert value in config(upstream(headers={name: value})).secrets()


def test_an_authorization_header_gives_its_value_and_its_token() -> None:
    found = config(upstream(headers={"Authorization": "Bearer sk-header-0123456789"})).secrets()
    assert {"Bearer sk-header-0123456789", "sk-header-0123456789"} <= set(found)


@pytest.mark.parametrize(
    ("name", "value"),
    [("OpenAI-Organization", "org-abc"), ("User-Agent", "appliance/1"), ("X-Title", "My app")],
)
def test_plain_headers_are_not_secrets(name: str, value: str) -> None:
    assert not secret_header(name, value)
    assert header_secrets({name: value}) == []
    assert value not in config(upstream(headers={name: value})).secrets()


def test_the_api_key_is_still_a_secret() -> None:
    assert "sk-plain-0123456789" in config(upstream(api_key="sk-plain-0123456789")).secrets()


def test_redis_and_collector_passwords_are_secrets() -> None:
    found = config(
        upstream(),
        state={"redis_url": "redis://:redis-Passw0rd@127.0.0.1:6379/0"},
        telemetry={"otlp_endpoint": "http://otel:otel-Passw0rd@127.0.0.1:4318"},
    ).secrets()
    assert {"redis-Passw0rd", "otel-Passw0rd"} <= set(found)


def test_the_redactor_hides_a_base_url_password_and_a_header_key_in_log_lines() -> None:
    found = config(
        upstream(
            base_url="http://bob:hunter2-Passw0rd@h:1/v1",
            headers={"api-key": "azure-key-0123456789"},
        )
    ).secrets()
    event = Redactor(found)(
        None,
        "warning",
        {"url": "http://bob:hunter2-Passw0rd@h:1/v1/chat", "message": "azure-key-0123456789?"},
    )
    assert event == {"url": f"http://{REDACTED}@h:1/v1/chat", "message": f"{REDACTED}?"}


def test_userinfo_and_an_api_key_together_are_refused() -> None:
    # Both become the one Authorization header: the HTTP client refuses every request.
    text = (
        "models:\n  - name: up\n    backend: openai\n    options:\n"
        "      base_url: http://bob:pw@h:1/v1\n      api_key: sk-0123456789\n"
    )
    with pytest.raises(ConfigError, match="user:password@"):
        parse_config(text, environ={})


def test_short_header_values_and_short_user_names_are_no_secrets() -> None:
    """A short value would be replaced wherever it stands alone: X-Session-Id: v1 would
    redact every /v1/ path in the logs. No credential is that short."""
    found = config(
        upstream(base_url=["http://admin@h:1/v1", "http://bob:pw@h:2/v1"]),
        {**upstream(headers={"X-Session-Id": "v1", "Authorization": "Bearer abc"}), "name": "b"},
    ).secrets()
    assert "v1" not in found and "admin" not in found
    assert "abc" not in found  # the credentials after the scheme: too short to be one
    assert "pw" in found  # a password is one, however short
