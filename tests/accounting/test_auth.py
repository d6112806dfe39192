"""API keys: plain or hashed, per-model permissions."""

from __future__ import annotations

import hashlib

import pytest

from appliance.accounting.auth import ANONYMOUS, Authenticator
from appliance.config import ApiKeyConfig
from appliance.errors import AuthenticationError, PermissionDeniedError


def keys() -> list[ApiKeyConfig]:
    return [
        ApiKeyConfig(name="plain", key="k1"),  # type: ignore[arg-type]
        ApiKeyConfig(name="hashed", key_sha256=hashlib.sha256(b"k2").hexdigest()),
        ApiKeyConfig(name="narrow", key="k3", models=["embed"]),  # type: ignore[arg-type]
    ]


@pytest.mark.parametrize(("token", "name"), [("k1", "plain"), ("k2", "hashed")])
def test_plain_and_hashed_keys_authenticate(token: str, name: str) -> None:
    assert Authenticator(keys()).authenticate(f"Bearer {token}").name == name


def test_scheme_is_case_insensitive() -> None:
    assert Authenticator(keys()).authenticate("bearer k1").name == "plain"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer wrong", "Token k1", "k1"])
def test_bad_headers_are_rejected(header: str | None) -> None:
    with pytest.raises(AuthenticationError):
        Authenticator(keys()).authenticate(header)


def test_no_keys_means_open() -> None:
    assert Authenticator([]).authenticate(None) is ANONYMOUS


def test_model_restriction() -> None:
    principal = Authenticator(keys()).authenticate("Bearer k3")
    assert principal.allows("embed")
    principal.check("embed")
    with pytest.raises(PermissionDeniedError):
        principal.check("chat")


def test_every_one_of_thousands_of_keys_names_its_own_caller() -> None:
    """Keys are looked up by digest (not compared with each in turn): each of 2,000 keys,
    plain and hashed, finds its own name, a near miss of any finds none, and a key
    written twice under two names is the first name's."""
    many = [
        ApiKeyConfig(name=f"team-{i}", key=f"sk-team-{i:05d}")  # type: ignore[arg-type]
        if i % 2
        else ApiKeyConfig(
            name=f"team-{i}", key_sha256=hashlib.sha256(f"sk-team-{i:05d}".encode()).hexdigest()
        )
        for i in range(2000)
    ]
    many.append(ApiKeyConfig(name="again", key="sk-team-00007"))  # type: ignore[arg-type]
    auth = Authenticator(many)
    for i in (0, 1, 7, 1234, 1999):
        assert auth.authenticate(f"Bearer sk-team-{i:05d}").name == f"team-{i}"
    for miss in ("sk-team-0000", "sk-team-000000", "sk-team-02000", "sk-TEAM-00001"):
        with pytest.raises(AuthenticationError):
            auth.authenticate(f"Bearer {miss}")
    assert auth.key_count == 2000
