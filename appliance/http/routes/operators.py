"""What operators look at: ``/metrics``, ``/status.json`` and the status page at ``/``."""

from __future__ import annotations

import os
import time
from importlib import resources
from typing import Any

import falcon
import falcon.asgi
import orjson

from appliance.accounting.limits import Limiter
from appliance.http.scope import Access
from appliance.runtime.metrics import CONTENT_TYPE, Metrics, Recent
from appliance.serving.cluster import Cluster
from appliance.serving.reload import Reloader

_PAGE = resources.files("appliance.http.routes").joinpath("status.html").read_bytes()


class MetricsResource:
    """Prometheus exposition, summed over every Granian process."""

    access = Access.OPERATOR

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # Series that name a key (spend, limits) only with the admin key (see Access).
        resp.data = self.metrics.exposition(keys=req.context.admin)
        resp.content_type = CONTENT_TYPE


class StatusResource:
    """The cluster as the status page shows it (this process's view)."""

    access = Access.OPERATOR

    def __init__(
        self,
        recent: Recent,
        reloader: Reloader | None,
        source: str | None,
        limiter: Limiter | None = None,
    ) -> None:
        self.recent = recent
        self.reloader = reloader
        self.source = source
        self.limiter = limiter
        self.started = time.time()

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        registry = cluster.registry
        snapshot = cluster.snapshot()
        models = [
            {
                "name": m.name,
                "type": registry.groups[m.name].config.type,
                "backend": registry.groups[m.name].config.backend,
                **m.as_dict(),
            }
            for m in snapshot.models
        ]
        reloader = self.reloader
        body = {
            "ready": snapshot.ready,
            "models": models,
            "aliases": registry.routes,
            "api_keys": cluster.auth.key_count,
            "budgets": await self._budgets(cluster) if req.context.admin else [],
            "recent": self.recent.summary(time.time()),
            "config": {
                "file": self.source,
                "reloads": reloader.reloads if reloader else 0,
                "last_reload": reloader.last_reload if reloader else None,
            },
            "pid": os.getpid(),
            "started": self.started,
            "now": time.time(),
        }
        if not req.context.admin:
            body = _without_private(body)  # worker PIDs, memory, errors, paths: the admin's
        resp.data = orjson.dumps(body)
        resp.content_type = falcon.MEDIA_JSON
        resp.set_header("cache-control", "no-store")

    async def _budgets(self, cluster: Cluster) -> list[dict[str, object]]:
        """Spend of each key with a budget in its current period."""
        budgets = {k.name: k.budget for k in cluster.config.auth.api_keys if k.budget}
        if self.limiter is None or not budgets:
            return []
        spent = await self.limiter.spent(budgets)
        currency = cluster.config.billing.currency
        return [
            {
                "key": name,
                "spent": round(spent.get(name, 0.0), 6) if name in spent else None,
                "amount": budget.amount,
                "period": budget.period,
                "currency": currency,
            }
            for name, budget in budgets.items()
        ]


class StatusPage:
    """Plain HTML and a small script that polls ``/status.json``."""

    access = Access.PUBLIC

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.data = _PAGE
        resp.content_type = falcon.MEDIA_HTML


_PRIVATE = frozenset({"pid", "memory_mb", "last_error", "file"})


def _without_private(value: Any) -> Any:
    """``value`` less, at any depth, what only the operator may see: process ids, memory,
    load errors (which name files) and the config file's path."""
    if isinstance(value, dict):
        return {k: _without_private(v) for k, v in value.items() if k not in _PRIVATE}
    if isinstance(value, list):
        return [_without_private(v) for v in value]
    return value
