"""The request log's sink: a finished request whose charge was marked to keep
(:meth:`~appliance.http.scope.RequestScope.open_charge`) is handed to the log.

It takes what the request already has: the body as parsed, the reply's bytes or the
stream's reply as it was folded while relayed (:class:`~appliance.wire.openai.assemble.Fold`),
the charge's usage, and the trace id that tracing noted on the scope
(``scope.fields["trace_id"]``, absent without tracing). Everything else (redaction, JSON,
SQLite) happens on the log's own thread.
"""

from __future__ import annotations

from appliance.accounting.auth import ANONYMOUS
from appliance.accounting.requestfiles import Summary
from appliance.accounting.requestlog import Capture, RequestLog
from appliance.http.scope import RequestScope
from appliance.wire.openai.assemble import Fold


class Capturing:
    """The scope's sink that queues a kept request for the request log."""

    __name__ = "capturing"

    def __init__(self, requests: RequestLog) -> None:
        self.requests = requests

    def __call__(self, scope: RequestScope) -> None:
        charge = scope.charge
        if charge is None or not charge.keep_bytes:
            return
        usage = charge.used(scope.client_gone)
        tally = charge.tally
        folded = tally.kept if tally is not None and isinstance(tally.kept, Fold) else None
        capture = scope.cluster.config.capture
        trace_id = scope.fields.get("trace_id")
        self.requests.add(
            Capture(
                summary=Summary(
                    id=scope.request_id,
                    ts=scope.ts,
                    key=(scope.principal or ANONYMOUS).name,
                    model=charge.model,
                    served_by=scope.timing.model,
                    route=scope.route or scope.path,
                    status=scope.status,
                    latency_ms=round(scope.elapsed_s * 1000, 3),
                    input_tokens=usage.prompt,
                    output_tokens=usage.completion,
                    trace_id=str(trace_id) if trace_id is not None else None,
                    stream=charge.streamed,
                ),
                request=charge.request,
                reply=charge.body,
                folded=folded,
                folded_cut=tally is not None and tally.chars > tally.keep_chars,
                redact=tuple(capture.redact),
                max_bytes=charge.keep_bytes,
            )
        )
