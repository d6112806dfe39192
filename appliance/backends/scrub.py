"""An upstream's echoes of its worker's secrets, scrubbed from what reaches a client.

Servers quote what they were sent in their errors (``Incorrect API key provided: sk-...``,
a proxy's dump of the request's headers). An upstream can only echo what its worker sent
it: the ``api_key``, the secret ``headers``, the base URL's userinfo (see
:mod:`appliance.config.credentials`). Every text of an upstream's that reaches a client, an
error's message, type, param and code, or an error event relayed as it came, goes through
a :class:`Scrubber` first, which replaces them with :data:`REDACTED` (the log redactor's
mark). Only errors do: the cost is on the error path alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson

from appliance.errors import APIError
from appliance.runtime.redaction import REDACTED, Secrets

__all__ = ["REDACTED", "Scrubber", "without_userinfo"]

E = TypeVar("E", bound=APIError)

# The fields of an error that may carry an upstream's words (``upstream_type``: its type).
_FIELDS = ("message", "param", "code", "upstream_type")


class Scrubber:
    """Replaces one worker's secrets in what its upstream says."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Each secret as sent, and as it stands inside a JSON string when it needs escapes
        # (a relayed event is JSON text, and a server may escape "/" or non-ASCII).
        found: list[str] = []
        for secret in secrets:
            found += [secret, orjson.dumps(secret).decode()[1:-1], json.dumps(secret)[1:-1]]
            found += [variant.replace("/", "\\/") for variant in found[-2:]]
        self._secrets = Secrets(found) if found else None

    def text(self, value: str) -> str:
        """``value`` with the secrets in it replaced."""
        return value if self._secrets is None else self._secrets.scrub(value)

    def error(self, error: E) -> E:
        """``error``, its text fields scrubbed (in place: a fresh error of the upstream's)."""
        if self._secrets is None:
            return error
        for name in _FIELDS:
            value = getattr(error, name, None)
            if isinstance(value, str):
                cleaned = self._secrets.scrub(value)
                if cleaned != value:
                    setattr(error, name, cleaned)
        error.args = (error.message,)
        return error

    def payload(self, payload: bytes) -> bytes:
        """An event's JSON ``payload`` relayed as it came, scrubbed."""
        if self._secrets is None:
            return payload
        text = payload.decode(errors="surrogateescape")
        cleaned = self._secrets.scrub(text)
        return payload if cleaned == text else cleaned.encode(errors="surrogateescape")


def without_userinfo(url: str) -> str:
    """``url`` without its ``user:password@``, fit to be shown."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
