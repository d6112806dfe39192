"""Charging every request that reached a model: token metrics, and the key's ``tpm``.

Each model request gets one :class:`Charge`. A plain reply is charged when it arrives; a
stream when it ends, however it ends (finished, failed, or left by its client), with
what was generated up to then. Usage comes from the backend's reply; where there is
none, it is estimated from the text (see :mod:`appliance.usage`) and the log says so
once per model.
"""

from __future__ import annotations

from typing import Any

import structlog

from appliance.auth import Principal
from appliance.limits import Limiter
from appliance.metrics import Metrics
from appliance.usage import StreamTally, Usage, of_reply

log = structlog.get_logger("appliance.usage")


class Accountant:
    """Where charges go: the token metrics, and the limiter for keys with ``tpm``."""

    def __init__(self, metrics: Metrics, limiter: Limiter) -> None:
        self.metrics = metrics
        self.limiter = limiter
        self._estimated: set[str] = set()

    def charge(self, principal: Principal, model: str, request: dict[str, Any]) -> Charge:
        """A charge for one request by ``principal`` to ``model`` (as the client named it)."""
        key = principal.name if principal.tpm is not None else None
        return Charge(self, key, model, request)

    async def record(self, key: str | None, model: str, usage: Usage) -> None:
        """Count ``usage`` in the metrics and against ``key``."""
        self.metrics.count_usage(model, usage)
        if usage.estimated and model not in self._estimated:
            self._estimated.add(model)
            log.warning(
                "usage_estimated",
                model=model,
                why="the backend sent no usage; charging about 4 characters a token",
            )
        if key is not None and usage.total > 0:
            await self.limiter.spend(key, usage.total)


class Charge:
    """The tokens of one request, recorded exactly once."""

    __slots__ = ("_accountant", "_done", "key", "model", "request", "tally")

    def __init__(
        self, accountant: Accountant, key: str | None, model: str, request: dict[str, Any]
    ) -> None:
        self._accountant = accountant
        self.key = key
        self.model = model
        self.request = request
        self.tally: StreamTally | None = None
        self._done = False

    def stream(self, client_asked: bool) -> StreamTally:
        """The tally of this request's stream (see :class:`StreamTally`)."""
        self.tally = StreamTally(client_asked)
        return self.tally

    async def reply(self, body: bytes) -> Usage:
        """Charge a plain reply."""
        usage = of_reply(body, self.request)
        await self._record(usage)
        return usage

    async def settle(self) -> None:
        """Charge the stream for what it carried so far (once; later calls do nothing)."""
        if self.tally is not None:
            await self._record(self.tally.result(self.request))

    async def _record(self, usage: Usage) -> None:
        if self._done:
            return
        self._done = True
        await self._accountant.record(self.key, self.model, usage)
