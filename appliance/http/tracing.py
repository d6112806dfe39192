"""A finished request's spans: the scope's sink that ends its trace.

The edge begins a request's trace when tracing is on (:class:`~.access.AccessLayer`), and a
model route's charge begins its model call's span
(:meth:`~appliance.http.scope.RequestScope.open_charge`). When the request is over, this
sink gives both their outcome, as the other sinks see it: if a reply came, the model it
names (else the model that answered) and the usage charged; the finish reasons, the
error, and the status sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.http.charge import Charge, TracedCharge
from appliance.http.scope import RequestScope
from appliance.telemetry import genai
from appliance.wire.usage import UNPARSED

if TYPE_CHECKING:
    from appliance.telemetry import RequestTrace

_FINISHING = frozenset({"chat", "text_completion"})  # operations whose replies state one


class Spans:
    """Ends a traced request's model-call span and its server span."""

    __name__ = "spans"

    def __call__(self, scope: RequestScope) -> None:
        trace = scope.trace
        if trace is None or not trace.recording:
            return
        try:
            if scope.charge is not None:
                _end_call(trace, scope, scope.charge)
        finally:  # held attempts and the server span go out whatever happened above
            trace.end(route=scope.route, status=scope.status)


def _end_call(trace: RequestTrace, scope: RequestScope, charge: Charge) -> None:
    """End the model call's span with what the request's charge saw."""
    failure = charge.failure
    error = type(failure).__name__ if failure is not None else None
    if error is None and scope.status >= 400:
        error = str(scope.status)
    tally = charge.tally
    # What the reply says belongs to a call that got one (a plain reply, or a
    # stream's first chunk: a stream cut later was charged what it relayed).
    named, used = None, None
    if isinstance(charge, TracedCharge) and charge.replied:
        named = charge.response_model or scope.timing.model
        used = charge.used(scope.client_gone)
    if tally is not None:
        reasons = tally.finish_reasons
    elif genai.operation(scope.route) in _FINISHING:
        reasons = genai.finish_reasons(charge.body)
    else:  # an embeddings or rerank reply, often megabytes, states none
        reasons = []
    trace.end_model_call(
        response_model=named,
        usage=used,
        finish_reasons=reasons,
        error=error,
        reply=charge.body,
        parsed=charge.parsed if isinstance(charge, TracedCharge) else UNPARSED,
    )
