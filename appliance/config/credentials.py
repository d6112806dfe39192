"""The secrets in what the config sends to a server: a URL's userinfo, a header's value.

They are kept out of the logs (:meth:`ApplianceConfig.secrets`), and out of whatever an
upstream echoes back to a client (an error that quotes the key it was sent).

- A URL's userinfo (``http://user:password@host``): the whole ``user:password`` (as
  written and percent-decoded), the password alone (both ways), and the Basic
  credentials an HTTP client sends for it (``base64(user:password)``).
- A header's value is a secret when the header's name holds ``auth``, ``key``,
  ``token``, ``secret``, ``password``, ``cookie``, ``session``, ``signature`` or
  ``credential`` (``Authorization``, ``api-key``, ``x-api-key``, ``X-Auth-Token``...), or
  when the value begins with an auth scheme (``Bearer ...``, ``Basic ...``): then the
  value, and the credentials after the scheme on their own. Other headers
  (``OpenAI-Organization``, ``User-Agent``) are not, nor is a value (or credentials)
  under :data:`MIN_HEADER_SECRET` characters: no credential is that short, and a short
  secret is replaced wherever it stands alone (``X-Session-Id: v1`` would redact every
  ``/v1/`` path in the logs).
- A user name alone (``http://TOKEN@host``) is a secret only as long as a header's must
  be: a token passed that way is, a name such as ``admin`` is not.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

_SECRET_NAME_PARTS = (
    "auth",
    "key",
    "token",
    "secret",
    "password",
    "passwd",
    "cookie",
    "session",
    "signature",
    "credential",
)
MIN_HEADER_SECRET = 8
"""Characters: a header value (or its credentials after a scheme) shorter than this is not
taken for a secret (see the module's rule)."""

# "Bearer abc", "Basic abc=": a scheme, then the credentials.
_SCHEME = re.compile(r"(?i)^(?:bearer|basic|token|digest|apikey|key)\s+(\S.*)$")


def url_secrets(url: str | None) -> list[str]:
    """The secrets of ``url``'s userinfo (none if it has none)."""
    if not url:
        return []
    netloc = urlsplit(url).netloc
    userinfo, at, _ = netloc.rpartition("@")
    if not at or not userinfo:
        return []
    user, colon, password = userinfo.partition(":")
    if not (colon and password) and len(unquote(user)) < MIN_HEADER_SECRET:
        return []  # a short user name alone: a name, not a token
    plain_user, plain_password = unquote(user), unquote(password)
    basic = base64.b64encode(f"{plain_user}:{plain_password}".encode()).decode()
    out = [userinfo, unquote(userinfo), basic]
    if colon and password:
        out += [password, plain_password]
    return _distinct(out)


def secret_header(name: str, value: str) -> bool:
    """Whether the header ``name: value`` carries a secret (see the module's rule)."""
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_NAME_PARTS) or bool(_SCHEME.match(value))


def header_secrets(headers: Mapping[str, str]) -> list[str]:
    """The secret values of ``headers``: each whole, and its credentials after a scheme."""
    out: list[str] = []
    for name, value in headers.items():
        value = value.strip()
        if len(value) < MIN_HEADER_SECRET or not secret_header(name, value):
            continue
        out.append(value)
        scheme = _SCHEME.match(value)
        if scheme is not None and len(scheme.group(1).strip()) >= MIN_HEADER_SECRET:
            out.append(scheme.group(1).strip())
    return _distinct(out)


def _distinct(values: list[str]) -> list[str]:
    """``values`` without empty ones and repeats, in order."""
    return list(dict.fromkeys(v for v in values if v))
