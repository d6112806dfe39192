"""``GET /admin/requests`` and ``GET /admin/requests/{id}``: the request log (admin key).

The list takes filters ``key``, ``model`` (as asked, or the model that answered),
``status``, ``since`` and ``until`` (a date, an ISO 8601 time or Unix seconds),
``trace_id`` and ``limit`` (1 to 1000, default 50) and gives summaries, newest first:
id, time, key, model, the model that answered, route, status, latency, tokens, trace id.
One request by id adds its prompt and its reply (a stream's, folded into one reply). A
filter that cannot be read, one that does not exist, or one given twice, is a 400 naming
it. The log is
this replica's folder (every Granian process of it writes there); see
:mod:`appliance.accounting.requestlog`.
"""

from __future__ import annotations

import asyncio

import falcon
import falcon.asgi
import orjson

from appliance.accounting.report import BadFilter
from appliance.accounting.requestlog import RequestLog
from appliance.accounting.requestquery import Query, one, search
from appliance.errors import InvalidRequestError, NotFoundError
from appliance.http.scope import Access

FILTERS = ("key", "model", "status", "since", "until", "trace_id", "limit")


def _log_of(requests: RequestLog | None) -> RequestLog:
    if requests is None:
        raise NotFoundError(
            "There is no request log: set capture.enabled (and capture.path or "
            "state.usage_path) in the config.",
            code="request_log_not_configured",
        )
    return requests


class RequestsResource:
    """Recent captured requests, by filter."""

    access = Access.ADMIN

    def __init__(self, requests: RequestLog | None) -> None:
        self.requests = requests

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        requests = _log_of(self.requests)
        for name, value in req.params.items():
            if name not in FILTERS:
                raise InvalidRequestError(
                    f"Unknown filter '{name}'; the filters are {', '.join(FILTERS)}.",
                    param=name,
                )
            if isinstance(value, list):  # ?key=a&key=b: no one value to use
                raise InvalidRequestError(
                    f"The filter '{name}' is given {len(value)} times; give it once.",
                    param=name,
                )
        try:
            query = Query.parse({name: req.get_param(name) for name in FILTERS})
        except BadFilter as exc:
            raise InvalidRequestError(str(exc), param=exc.param) from None
        found = await asyncio.to_thread(search, requests.folder, query)
        resp.data = orjson.dumps({"object": "list", "data": found})
        resp.content_type = falcon.MEDIA_JSON
        resp.set_header("cache-control", "no-store")


class RequestResource:
    """One captured request, with its prompt and reply."""

    access = Access.ADMIN

    def __init__(self, requests: RequestLog | None) -> None:
        self.requests = requests

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, request_id: str
    ) -> None:
        requests = _log_of(self.requests)
        found = await asyncio.to_thread(one, requests.folder, request_id)
        if found is None:
            raise NotFoundError(
                f"The request log has no request '{request_id}'.", code="request_not_found"
            )
        resp.data = orjson.dumps(found)
        resp.content_type = falcon.MEDIA_JSON
        resp.set_header("cache-control", "no-store")
