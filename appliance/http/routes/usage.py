"""``GET /admin/usage``: the usage ledger's totals by day, key and model (admin key).

Query parameters ``key``, ``model``, ``from``, ``to`` (see :mod:`appliance.accounting.report`)
and ``format`` (``json``, the default, or ``csv``; ``Accept: text/csv`` asks for CSV too).
The totals are this replica's ledger file (every Granian process of it writes there).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import falcon
import falcon.asgi
import orjson

from appliance.accounting.ledger import Ledger
from appliance.accounting.report import BadFilter, Filters, as_csv, as_json, report
from appliance.errors import InvalidRequestError, NotFoundError
from appliance.http.scope import Access
from appliance.serving.cluster import Cluster


class UsageResource:
    """Totals from the ledger file, JSON or CSV."""

    access = Access.ADMIN

    def __init__(self, ledger: Ledger | None) -> None:
        self.ledger = ledger

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        cluster: Cluster = req.context.cluster
        if self.ledger is None:
            raise NotFoundError(
                "There is no usage ledger: set state.usage_path in the config.",
                code="ledger_not_configured",
            )
        wanted = req.get_param("format") or (
            "csv" if "text/csv" in (req.get_header("Accept") or "") else "json"
        )
        if wanted not in ("json", "csv"):
            raise InvalidRequestError("'format' must be json or csv.", param="format")
        try:
            filters = Filters.parse(
                req.get_param("key"),
                req.get_param("model"),
                req.get_param("from"),
                req.get_param("to"),
            )
        except BadFilter as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        await self.ledger.flush()  # what was charged before this request is in the file
        currency = cluster.config.billing.currency
        try:
            found = await asyncio.to_thread(report, Path(self.ledger.path), filters, currency)
        except BadFilter as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        if wanted == "csv":
            resp.text = as_csv(found.rows)
            resp.content_type = "text/csv; charset=utf-8"
        else:
            resp.data = orjson.dumps(as_json(found.rows, found.currency))
            resp.content_type = falcon.MEDIA_JSON
        resp.set_header("cache-control", "no-store")
