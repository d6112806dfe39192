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

import structlog

from appliance.accounting.auth import ANONYMOUS
from appliance.accounting.budgets import day_of
from appliance.accounting.ledger import Ledger, Row
from appliance.accounting.limits import Limiter
from appliance.accounting.pricing import PriceList
from appliance.http.scope import RequestScope
from appliance.runtime.metrics import Metrics
from appliance.wire.usage import Usage

log = structlog.get_logger("appliance.usage")


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
        usage = charge.used(scope.client_gone)
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
