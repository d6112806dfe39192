"""Charging every request that reached a model: tokens, cost, the key's limits, the ledger.

Each model request gets one :class:`Charge`. A plain reply is charged when it arrives; a
stream when it ends, however it ends (finished, failed, or left by its client), with
what was generated up to then. Usage comes from the backend's reply; where there is
none, it is estimated from the text (see :mod:`appliance.wire.usage`) and the log says so
once per model. A request that reached a model and failed is charged nothing, and
still gets its row in the ledger (with its status) through :class:`Metering`.

Resources call ``accountant.charge(principal, model, body)``; what the ledger needs of
the HTTP request (route, start, request id, the cluster it is pinned to, the model that
answered) the charge takes from the request that :class:`Metering` marked as this task's
model request, so any metered route gets all of it without passing it along.

The cost is the usage at the prices of the model that answered (an alias's target), as
the config the request started under states them (:mod:`appliance.accounting.pricing`). It goes to
``appliance_cost_total{key,model}``, to the key's spend (budgets) and to the ledger.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any

import falcon.asgi
import structlog

from appliance.accounting.auth import Principal
from appliance.accounting.budgets import day_of
from appliance.accounting.ledger import Ledger, Row
from appliance.accounting.limits import Limiter
from appliance.accounting.pricing import PriceList
from appliance.errors import APIError
from appliance.http.access import REQUEST_ID, STARTED, note, on_disconnect
from appliance.runtime.metrics import Metrics
from appliance.serving.cluster import Cluster
from appliance.serving.gateway import Timing
from appliance.wire.usage import StreamTally, Usage, of_reply

log = structlog.get_logger("appliance.usage")

CLIENT_LEFT = 499  # nginx's "client closed request": a stream left before its end
NOTHING = Usage(0, 0, 0)

# The model request this task serves (each ASGI request runs in its own task and context).
_REQUEST: ContextVar[falcon.asgi.Request | None] = ContextVar("appliance_request", default=None)


class Accountant:
    """Where charges go: metrics, the key's limits and budget, and the ledger."""

    def __init__(self, metrics: Metrics, limiter: Limiter, ledger: Ledger | None = None) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self.ledger = ledger
        self.prices = PriceList()
        self._estimated: set[str] = set()

    def charge(self, principal: Principal, model: str, request: dict[str, Any]) -> Charge:
        """A charge for one request by ``principal`` to ``model`` (as the client named it)."""
        req = _REQUEST.get()
        charge = Charge(self, principal, req, model, request)
        if req is not None:
            req.context.charge = charge
            on_disconnect(req.scope, charge.client_left)
        return charge

    async def record(self, charge: Charge, usage: Usage, status: int) -> None:
        """Count ``usage`` in the metrics, against the key, and in the ledger."""
        principal = charge.principal
        served = charge.timing.model or charge.model
        cluster = charge.cluster
        cost = 0.0 if cluster is None else self.prices.of(cluster.config).cost(served, usage)
        # The work is named by the model that did it (an alias's target), as its prices
        # and the ledger are; the request itself keeps the client's name (access, metrics).
        self.metrics.count_usage(served, usage)
        if cost > 0:
            self.metrics.cost.labels(principal.name, served).inc(cost)
        if usage.estimated and usage.complete and served not in self._estimated:
            self._estimated.add(served)
            log.warning(
                "usage_estimated",
                model=served,
                why="the backend sent no usage; charging about 4 characters a token",
            )
        tokens = usage.total if principal.tpm is not None else 0
        if tokens > 0 or cost > 0:
            # Before the ledger's row: the spend book must know a cost before a flush of
            # its row takes it off the unwritten part.
            await self.limiter.spend(principal.name, tokens, cost, day_of(charge.ts))
        if self.ledger is not None:
            self.ledger.append(
                Row(
                    ts=charge.ts,
                    key=principal.name,
                    model=served,
                    route=charge.route,
                    input_tokens=usage.prompt,
                    output_tokens=usage.completion,
                    cost=cost,
                    status=status,
                    latency_ms=round((time.perf_counter() - charge.started) * 1000, 3),
                    estimated=usage.estimated,
                    request_id=charge.request_id,
                )
            )


class Charge:
    """The tokens of one request, recorded exactly once."""

    __slots__ = (
        "_accountant",
        "_done",
        "cluster",
        "model",
        "principal",
        "request",
        "request_id",
        "route",
        "started",
        "status",
        "tally",
        "timing",
        "ts",
    )

    def __init__(
        self,
        accountant: Accountant,
        principal: Principal,
        req: falcon.asgi.Request | None,
        model: str,
        request: dict[str, Any],
    ) -> None:
        self._accountant = accountant
        self.principal = principal
        self.model = model
        self.request = request
        context = req.context if req is not None else None
        scope = req.scope if req is not None else {}
        self.cluster: Cluster | None = context.get("cluster") if context else None
        self.timing: Timing = (context.get("timing") if context else None) or Timing()
        self.route = (req.uri_template or req.path) if req is not None else ""
        self.started: float = scope.get(STARTED) or time.perf_counter()
        self.ts = time.time() - (time.perf_counter() - self.started)
        self.request_id: str | None = scope.get(REQUEST_ID)
        self.tally: StreamTally | None = None
        self.status = 200
        self._done = False

    def stream(self, client_asked: bool) -> StreamTally:
        """The tally of this request's stream (see :class:`StreamTally`)."""
        self.tally = StreamTally(client_asked)
        return self.tally

    def client_left(self) -> None:
        """The client left the stream before its end (it is charged what was relayed)."""
        self.status = CLIENT_LEFT

    async def reply(self, body: bytes) -> Usage:
        """Charge a plain reply."""
        usage = of_reply(body, self.request)
        await self._record(usage, self.status)
        return usage

    async def settle(self, failure: APIError | None = None) -> None:
        """Charge the stream for what it carried so far (once; later calls do nothing);
        a stream that ``failure`` ended is recorded with its status, unless the client
        had left."""
        if self.tally is not None:
            status = self.status
            if failure is not None and status != CLIENT_LEFT:
                status = failure.status
            await self._record(self.tally.result(self.request), status)

    async def failed(self, status: int) -> None:
        """The request failed after reaching a model: a ledger row, nothing charged."""
        if self.timing.model is not None and self.tally is None:
            await self._record(NOTHING, status)

    async def _record(self, usage: Usage, status: int) -> None:
        if self._done:
            return
        self._done = True
        await self._accountant.record(self, usage, status)


class Metering:
    """Falcon middleware: marks model requests for their charges; failures get a row."""

    async def process_resource(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        params: dict[str, Any],
    ) -> None:
        if getattr(resource, "metered", False):
            _REQUEST.set(req)

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        charge: Charge | None = req.context.get("charge")
        if charge is not None:
            if charge.timing.model is not None:
                note(req.scope, served_by=charge.timing.model)  # the model that answered
            if not req_succeeded:
                await charge.failed(resp.status_code)
