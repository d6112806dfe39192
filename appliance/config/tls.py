"""``server.tls``: HTTPS served by Granian itself, and the check that its files load.

Granian reads the certificate and key when a serving process starts and keeps them for its
life: a renewed certificate is served after a restart (a reload says ``restart_needed``;
see :func:`file_digests`). Paths are relative to the working directory, like every other
path in the config.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from appliance.config.model import LocatedValueError, Strict


class TlsConfig(Strict):
    """HTTPS on ``server.port``: the server's certificate, and optionally client certificates."""

    cert_file: Path = Field(
        description="PEM file of the server's certificate, followed by its intermediates "
        "(the chain clients need, leaf first)."
    )
    key_file: Path = Field(
        description="PEM file of the certificate's private key, unencrypted (Granian reads no "
        "password-protected keys): keep it readable by the appliance's user only."
    )
    ca_file: Path | None = Field(
        None,
        description="PEM file of the CAs that sign client certificates. Set: every client "
        "must present a certificate signed by one of them (mutual TLS), or the handshake "
        "fails; absent: no client certificates are asked for.",
    )
    min_version: Literal["1.2", "1.3"] = Field("1.2", description="Oldest TLS version accepted.")

    @field_validator("min_version", mode="before")
    @classmethod
    def _version_as_written(cls, value: Any) -> Any:
        """YAML reads an unquoted ``1.3`` as a number: take it as the version it names."""
        if isinstance(value, float) and value in (1.2, 1.3):
            return str(value)
        return value


def tls_problems(tls: TlsConfig | None) -> list[LocatedValueError]:
    """Why ``server.tls``'s files would not serve: unreadable, not PEM, an encrypted key, a
    key that does not match the certificate, a CA file that does not load. Nothing without
    TLS. Located from the top of the config."""
    if tls is None:
        return []
    where = ("server", "tls")
    problems: list[LocatedValueError] = []
    cert = _read(tls.cert_file, "CERTIFICATE", "a PEM certificate")
    key = _read(tls.key_file, "PRIVATE KEY", "a PEM private key")
    if cert:
        problems.append(LocatedValueError(cert, (*where, "cert_file")))
    if key:
        problems.append(LocatedValueError(key, (*where, "key_file")))
    if not cert and not key:
        pair = _pair_problem(tls)
        if pair is not None:
            problems.append(LocatedValueError(pair[1], (*where, pair[0])))
    if tls.ca_file is not None:
        ca = _read(tls.ca_file, "CERTIFICATE", "a PEM CA certificate") or _ca_problem(tls.ca_file)
        if ca:
            problems.append(LocatedValueError(ca, (*where, "ca_file")))
    return problems


def file_digests(tls: TlsConfig | None) -> dict[str, bytes | None]:
    """What each of ``server.tls``'s files holds now, as a digest by field name (None: the
    file cannot be read). A reload compares them with those taken at start to tell which
    file was replaced since (Granian serves what it read at start)."""
    if tls is None:
        return {}
    out: dict[str, bytes | None] = {}
    for name in ("cert_file", "key_file", "ca_file"):
        path: Path | None = getattr(tls, name)
        if path is None:
            continue
        try:
            out[name] = hashlib.sha256(path.read_bytes()).digest()
        except OSError:
            out[name] = None
    return out


def _read(path: Path, label: str, what: str) -> str | None:
    """Why ``path`` is not a readable PEM file holding a ``label`` block; None if it is."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return f"{path}: no such file"
    except IsADirectoryError:
        return f"{path}: is a folder, not a file"
    except PermissionError:
        return f"{path}: not readable by this user (permission denied)"
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    if not re.search(rb"-----BEGIN [A-Z0-9 ]*" + label.encode() + rb"-----", text):
        return f"{path}: not {what} (no `-----BEGIN {label}-----` block)"
    return None


def _pair_problem(tls: TlsConfig) -> tuple[str, str] | None:
    """``(field, why)`` if the certificate and key, both PEM, do not load together."""
    if _encrypted(tls.key_file):
        # Granian 2.8's Rust side cannot decrypt a PKCS#8 key (it panics): say so here.
        return "key_file", (
            f"{tls.key_file}: the key is encrypted (password-protected), and Granian, the "
            "HTTP server, reads only unencrypted keys: decrypt it once "
            f"(`openssl pkey -in {tls.key_file} -out key.pem`) and keep that file readable "
            "by the appliance's user only"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # A password callable: OpenSSL never falls back to asking on the terminal.
        context.load_cert_chain(tls.cert_file, tls.key_file, lambda: "")
    except ssl.SSLError as exc:
        reason = f"{exc.reason} {exc}".upper()
        if "KEY_VALUES_MISMATCH" in reason:
            return "key_file", (
                f"{tls.key_file}: the private key does not match the certificate in {tls.cert_file}"
            )
        return "cert_file", (
            f"{tls.cert_file} with {tls.key_file}: the certificate and key do not load "
            f"({exc.reason or exc})"
        )
    return None


def _encrypted(path: Path) -> bool:
    text = path.read_bytes()
    return b"ENCRYPTED PRIVATE KEY" in text or b"Proc-Type: 4,ENCRYPTED" in text


def _ca_problem(path: Path) -> str | None:
    """Why ``path`` does not load as CA certificates; None if it does."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=path)
    except ssl.SSLError as exc:
        return f"{path}: the CA certificates do not load ({exc.reason or exc})"
    return None
