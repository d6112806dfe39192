"""What a request is charged: what the model did, written once when the request ends.

A model route opens one :class:`Charge` on its request's scope
(:meth:`~appliance.http.scope.RequestScope.open_charge`). A plain reply's usage is read
when it arrives; a stream's is tallied as it is relayed (see
:class:`~appliance.wire.usage.StreamTally`), and what was relayed counts however the
stream ended. Usage comes from the backend's reply; where there is none, it is estimated
from the text (see :mod:`appliance.wire.usage`) and the log says so once per model.

When the request ends, :class:`Charging` (a sink of the scope) settles it, once:

- a request that reached no model is charged nothing and has no row;
- one that reached a model has exactly one row in the ledger, with the request's one
  status (:meth:`~appliance.http.scope.RequestScope.finish`), and is charged what the
  model produced: a plain reply in full, even if its client left before it came (status
  499); a stream what was relayed; a call that failed at the model nothing.

The cost is the usage at the prices of the model that answered (an alias's target), as
the config the request started under states them (:mod:`appliance.accounting.pricing`).
It goes to ``appliance_cost_total{key,model}``, to the key's spend (budgets, ``tpm``) and
to the ledger, with the config's currency.
"""

from __future__ import annotations

from typing import Any

import structlog

from appliance.accounting.auth import ANONYMOUS
from appliance.accounting.budgets import day_of
from appliance.accounting.ledger import Ledger, Row
from appliance.accounting.limits import Limiter
from appliance.accounting.pricing import PriceList
from appliance.errors import APIError
from appliance.http.scope import RequestScope
from appliance.runtime.metrics import Metrics
from appliance.wire.usage import StreamTally, Usage, of_reply

log = structlog.get_logger("appliance.usage")

NOTHING = Usage(0, 0, 0)


class Charge:
    """The usage of one request's model call, as far as it is known.

    Attributes:
        model: The model as the client named it.
        request: The request body sent to the model (for estimates).
        usage: A plain reply's usage, once it came.
        tally: A stream's tally, once it began.
        failure: The error that ended a stream, if one did.
    """

    __slots__ = ("failure", "model", "request", "tally", "usage")

    def __init__(self, model: str, request: dict[str, Any]) -> None:
        self.model = model
        self.request = request
        self.usage: Usage | None = None
        self.tally: StreamTally | None = None
        self.failure: APIError | None = None

    def reply(self, body: bytes) -> Usage:
        """Read a plain reply's usage (charged when the request ends)."""
        self.usage = of_reply(body, self.request)
        return self.usage

    def stream(self, client_asked: bool) -> StreamTally:
        """The tally of this request's stream (see :class:`StreamTally`)."""
        self.tally = StreamTally(client_asked)
        return self.tally

    async def settle(self, failure: APIError | None = None) -> None:
        """The stream is over; ``failure`` ended it, if anything did."""
        self.failure = failure

    def used(self) -> Usage:
        """What the model produced: the reply's usage, what a stream relayed, or nothing
        (the call failed at the model)."""
        if self.usage is not None:
            return self.usage
        if self.tally is not None:
            return self.tally.result(self.request)
        return NOTHING


class Charging:
    """The scope's sink that charges and records a request that reached a model."""

    __name__ = "charging"

    def __init__(self, metrics: Metrics, limiter: Limiter, ledger: Ledger | None = None) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self.ledger = ledger
        self.prices = PriceList()
        self._estimated: set[str] = set()

    async def __call__(self, scope: RequestScope) -> None:
        charge, served = scope.charge, scope.timing.model
        if charge is None or served is None:
            return  # no model did anything: nothing to charge, no row
        principal = scope.principal or ANONYMOUS
        usage = charge.used()
        config = scope.cluster.config
        cost = self.prices.of(config).cost(served, usage)
        # The work is named by the model that did it (an alias's target), as its prices
        # and the ledger are; the request itself keeps the client's name (access, metrics).
        self.metrics.count_usage(served, usage)
        if cost > 0:
            self.metrics.cost.labels(principal.name, served).inc(cost)
        self._say_estimated(usage, served)
        tokens = usage.total if principal.tpm is not None else 0
        if tokens > 0 or cost > 0:
            # Before the ledger's row: the spend book must know a cost before a flush of
            # its row takes it off the unwritten part.
            await self.limiter.spend(principal.name, tokens, cost, day_of(scope.ts))
        if self.ledger is not None:
            self.ledger.append(
                Row(
                    ts=scope.ts,
                    key=principal.name,
                    model=served,
                    route=scope.route or scope.path,
                    input_tokens=usage.prompt,
                    output_tokens=usage.completion,
                    cost=cost,
                    status=scope.status,
                    latency_ms=round(scope.elapsed_s * 1000, 3),
                    estimated=usage.estimated,
                    request_id=scope.request_id,
                    currency=config.billing.currency,
                )
            )

    def _say_estimated(self, usage: Usage, served: str) -> None:
        if usage.estimated and usage.complete and served not in self._estimated:
            self._estimated.add(served)
            log.warning(
                "usage_estimated",
                model=served,
                why="the backend sent no usage; charging about 4 characters a token",
            )
