"""What a finished request feeds, besides its charge: the metrics and the access line.

Each sink is a plain callable of a :class:`~appliance.http.scope.RequestScope`; the app
factory lists them (:func:`appliance.http.app.create_app`), and every one sees the same
outcome, so the ledger, ``appliance_requests_total`` and the access line always give a
request the same status.
"""

from __future__ import annotations

import time
from typing import Any

from appliance.clip import ECHO_CHARS, clip
from appliance.http.scope import RequestScope
from appliance.runtime.logging import BoundOnce
from appliance.runtime.metrics import Metrics, Recent
from appliance.serving.cluster import ClusterRef


class Counting:
    """``appliance_requests_total``, the latency histogram and the status page's figures.

    Labels stay bounded: a route is its template, never a caller's path, and a model is
    one the cluster serves, never an arbitrary name a caller sent.
    """

    __name__ = "counting"

    def __init__(self, metrics: Metrics, recent: Recent) -> None:
        self.metrics = metrics
        self.recent = recent
        self._requests = metrics.series(metrics.requests)  # by (route, model, status)
        self._latency = metrics.series(metrics.latency)  # by (route, model)
        self._waits = metrics.series(metrics.queue_wait)  # by (model, priority)

    def __call__(self, scope: RequestScope) -> None:
        route = scope.route or "unmatched"
        model = scope.cluster.registry.served_as(scope.fields.get("model"))
        elapsed = scope.elapsed_s
        status = scope.status
        self._requests[route, model, status].inc()
        self._latency[route, model].observe(elapsed)
        self.recent.add(time.time(), elapsed, status >= 500)
        timing = scope.timing
        if timing.queued_s and scope.principal is not None:  # it asked a model for a slot
            self._waits[timing.model or model, scope.principal.priority].observe(timing.queued_s)
        for spill in timing.spills or ():
            self.metrics.spills.labels(spill.model, spill.reason).inc()


class AccessLog:
    """One ``request`` line per request, when the serving config's logging asks for it.

    Whatever the caller wrote (path, model name) is clipped (:func:`appliance.clip.clip`),
    so a caller cannot inflate the logs.
    """

    __name__ = "access_log"

    def __init__(self, ref: ClusterRef) -> None:
        self.ref = ref
        self.log = BoundOnce("appliance.access")

    def __call__(self, scope: RequestScope) -> None:
        if not self.ref.current.config.logging.access_log:
            return
        timing = scope.timing
        method, path = scope.method, scope.path
        line: dict[str, Any] = {
            "method": method if len(method) <= ECHO_CHARS else clip(method),
            "path": path if len(path) <= ECHO_CHARS else clip(path),
            "status": scope.status,
            "duration_ms": round(scope.elapsed_s * 1000, 2),
        }
        if scope.client_gone:
            line["client_gone"] = True
        principal = scope.principal
        if principal is not None and scope.cluster.auth.enabled:  # only when keys are in use
            line["key_name"] = principal.name
        if timing.model is not None:
            line["served_by"] = timing.model
        if timing.spills:
            line["spilled"] = [s.as_dict() for s in timing.spills]
        for name, value in scope.fields.items():
            # clip_value(value), without a call for what needs no clipping.
            if isinstance(value, str) and len(value) > ECHO_CHARS:
                value = clip(value)
            line[name] = value
        self.log.info("request", line)
