"""Falcon middleware: callers and their limits, and the appliance's overhead."""

from __future__ import annotations

import hmac
from typing import Any

import falcon.asgi
from pydantic import SecretStr

from appliance.accounting.limits import Limiter, Quota
from appliance.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from appliance.http.scope import Access, RequestScope
from appliance.runtime.metrics import Metrics

API_PREFIXES = ("/v1", "/api/v1")
"""Where the API is served: OpenAI's prefix, and DB-GPT's for its clients."""


class ApiPrefix:
    """Serves ``/api/v1/...`` (DB-GPT's clients) from the routes of ``/v1/...``.

    The routes are registered once, under ``/v1``; a request under another prefix of
    :data:`API_PREFIXES` is routed as if it came under ``/v1`` (Falcon routes on
    ``req.path`` after ``process_request``). The access log keeps the path as sent.
    """

    _ALIASES = tuple(p + "/" for p in API_PREFIXES[1:])

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        for alias in self._ALIASES:
            if req.path.startswith(alias):
                req.path = API_PREFIXES[0] + req.path[len(alias) - 1 :]
                return


class Authentication:
    """Checks each request against its resource's access level, in one place.

    Each resource declares ``access`` (:class:`~appliance.http.scope.Access`; the API's
    resources are ``client`` by default). A client key comes as ``Authorization: Bearer
    <key>`` (OpenAI's clients) or ``x-api-key: <key>`` (Anthropic's); when both are sent
    they must be the same key. The admin key (``server.admin_key``) comes as ``Bearer``.
    Resources with ``metered = True`` (model calls) are admitted against the key's
    ``rpm``, ``tpm`` and ``budget`` (their tokens and cost are charged when the request
    ends, see :mod:`appliance.http.metering`; a request admitted before the budget ran out
    finishes).
    """

    def __init__(self, limiter: Limiter, metrics: Metrics) -> None:
        self.limiter = limiter
        self.metrics = metrics

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        scope: RequestScope = req.context  # type: ignore[assignment]
        scope.route = req.uri_template  # bounded metric labels (see sinks)
        if resource is None:
            return  # no route: Falcon answers 404
        access = scope.access = getattr(resource, "access", Access.CLIENT)
        authorization = req.get_header("Authorization")
        if access is Access.CLIENT:  # the API: no route of it reads scope.admin
            await self._client(req, scope, authorization, getattr(resource, "metered", False))
            return
        admin_key = scope.cluster.config.server.admin_key
        if admin_key is None:  # no operator to tell apart on an open server (no keys)
            scope.admin = not scope.cluster.auth.enabled
        else:
            scope.admin = _is_key(authorization, admin_key)
        if access is Access.PUBLIC:
            return
        if access is Access.ADMIN and admin_key is None:
            raise PermissionDeniedError(
                "Admin endpoints are off: set server.admin_key to use them.", code="admin_disabled"
            )
        if admin_key is not None and not scope.admin:  # operator or admin
            raise AuthenticationError("This endpoint needs the admin key: 'Bearer <admin_key>'.")

    async def _client(
        self,
        req: falcon.asgi.Request,
        scope: RequestScope,
        authorization: str | None,
        metered: bool,
    ) -> None:
        caller = scope.cluster.auth.caller(authorization, req.get_header("x-api-key"))
        principal = scope.principal = caller
        if not metered or not principal.limited:
            return
        try:
            req.context.quota = await self.limiter.admit(
                principal.name,
                principal.rpm,
                principal.tpm,
                principal.budget,
                scope.cluster.config.billing.currency,
            )
        except RateLimitError:
            self.metrics.rate_limited.labels(principal.name).inc()
            raise

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        quota: Quota | None = req.context.quota
        if quota is not None:
            resp.set_headers(quota.headers())


def _is_key(authorization: str | None, key: SecretStr) -> bool:
    """Whether ``authorization`` is ``Bearer <key>`` (compared in constant time)."""
    scheme, _, token = (authorization or "").partition(" ")
    expected = key.get_secret_value().encode()
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)


class Overhead:
    """``x-appliance-overhead-ms``: time in the appliance, less the client's body, workers
    and queueing."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        scope: RequestScope = req.context  # type: ignore[assignment]
        if not getattr(resource, "metered", False):
            return
        timing = scope.timing
        overhead = scope.elapsed_s - timing.worker_s - timing.queued_s
        overhead -= timing.client_s
        overhead = max(overhead, 0.0)
        resp.set_header("x-appliance-overhead-ms", f"{overhead * 1000:.3f}")
        self.metrics.overhead.observe(overhead)
