"""Client API keys: who is calling, and which models they may use.

Keys are held as SHA-256 digests, and a caller's key is looked up by its digest: a
guess that is nearly right has a digest that shares nothing with the key's, so the
lookup's time says nothing of how much of it was right, and it takes the same time with
one key or thousands (comparing the digest with every key's cost 54 us a request with
1,000 keys). The admin key is one key, compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from appliance.clip import clip
from appliance.config import ApiKeyConfig, Priority
from appliance.config.auth import BudgetConfig
from appliance.errors import AuthenticationError, PermissionDeniedError


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, known by its key's name; ``priority`` is the scheduling
    class of its requests (see :mod:`appliance.serving.scheduling`)."""

    name: str
    models: frozenset[str] | None
    rpm: int | None = None
    tpm: int | None = None
    budget: BudgetConfig | None = None
    priority: Priority = "standard"

    @property
    def limited(self) -> bool:
        """Whether this key has request, token or spend limits."""
        return self.rpm is not None or self.tpm is not None or self.budget is not None

    def allows(self, model: str) -> bool:
        """Whether this key may use ``model`` (a model name or alias)."""
        return self.models is None or model in self.models

    def check(self, model: str) -> None:
        """Raise 403 unless this key may use ``model``."""
        if not self.allows(model):
            raise PermissionDeniedError(
                f"The API key '{self.name}' is not allowed to use model `{clip(model)}`.",
                param="model",
            )


ANONYMOUS = Principal("anonymous", None)


class Authenticator:
    """Checks ``Authorization: Bearer <key>`` against the configured keys."""

    def __init__(self, keys: Iterable[ApiKeyConfig]) -> None:
        self._keys: dict[bytes, Principal] = {}
        for k in keys:
            principal = Principal(
                k.name,
                frozenset(k.models) if k.models else None,
                k.rpm,
                k.tpm,
                k.budget,
                k.priority,
            )
            self._keys.setdefault(k.digest(), principal)  # the first of a repeated key

    @property
    def enabled(self) -> bool:
        """False when no keys are configured: the API is open."""
        return bool(self._keys)

    @property
    def key_count(self) -> int:
        """How many keys are configured."""
        return len(self._keys)

    def caller(self, authorization: str | None, api_key: str | None) -> Principal:
        """The caller behind ``Authorization`` and/or ``x-api-key`` (Anthropic's clients).

        Either header alone names the key. When both are sent, both must be valid and
        name the same key: a wrong ``x-api-key`` is never hidden by a valid bearer token.

        Raises:
            AuthenticationError: as :meth:`authenticate`, or the two headers disagree.
        """
        if authorization is None:
            return self.authenticate(f"Bearer {api_key}" if api_key else None)
        principal = self.authenticate(authorization)
        if api_key is not None and self._keys:
            try:
                other: Principal | None = self.authenticate(f"Bearer {api_key}")
            except AuthenticationError:
                other = None
            if other is not principal:
                raise AuthenticationError(
                    "The x-api-key and Authorization headers must name the same valid API "
                    "key; send one of them."
                )
        return principal

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header.

        Raises:
            AuthenticationError: keys are configured and this one is missing or unknown.
        """
        if not self._keys:
            return ANONYMOUS
        if not authorization:
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY' "
                "(Anthropic's clients: 'x-api-key: YOUR_KEY')."
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthenticationError("Malformed Authorization header: expected 'Bearer YOUR_KEY'.")
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        found = self._keys.get(digest)
        if found is None:
            raise AuthenticationError("Incorrect API key provided.")
        return found
