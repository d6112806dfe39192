"""One request's account, from the ASGI edge to its end: the request scope.

Every HTTP request gets one :class:`RequestScope` at the edge (:mod:`.access`), before
Falcon sees it, and Falcon's ``req.context`` *is* that scope (:class:`Request`). It holds
what the request is pinned to and what happened to it: the cluster it runs on, the
caller (:attr:`principal`), the access level its resource declares, where its time went
(:attr:`timing`), the model call's :class:`~.charge.Charge`, and how it ended.

When the request is over, however it ended (answered, failed at the model, cancelled by
its client, cut by a drain, or refused before any model), :meth:`RequestScope.finish`
runs exactly once. It settles the outcome (:attr:`status`: one status for the ledger,
the metrics and the access line) and feeds the scope to the sinks assembled in the app
factory (:mod:`.sinks`), each a plain callable; one that fails is logged and never keeps
the others from running. The sinks come in two kinds:

- those that *settle* the request (its charge: the key's spend, its budget, the ledger's
  row) run in :meth:`~RequestScope.finish`, before the response's last bytes go, so that
  a client that spends again the moment it has its reply finds this one charged;
- those that only *report* it (the metrics, the access line, the request log, the
  spans) run in :meth:`~RequestScope.report`, called as soon as the response's last
  bytes are handed over (by the edge when the request is over, for one that sent
  none): their work is not on the way to the client, and a client that reads the
  metrics right after its reply finds it counted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import falcon.asgi
import structlog

from appliance.errors import APIError
from appliance.http.charge import Charge, TracedCharge
from appliance.serving.timing import Timing
from appliance.telemetry.genai import operation

if TYPE_CHECKING:
    from appliance.accounting.auth import Principal
    from appliance.accounting.limits import Quota
    from appliance.serving.cluster import Cluster
    from appliance.telemetry import RequestTrace

log = structlog.get_logger("appliance.scope")

SCOPE = "appliance.scope"  # the ASGI scope's key for the request's RequestScope
CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection"

Sink = Callable[["RequestScope"], Awaitable[None] | None]
Report = Callable[["RequestScope"], None]


class Access(StrEnum):
    """Who may call a resource; each resource declares one (``access = Access.X``).

    - ``public``: anyone (liveness and readiness probes, the status page's HTML).
    - ``client``: a client key when the config has any (the API).
    - ``operator``: with ``server.admin_key`` set, the admin key; without one, anyone,
      but what names a key or its spend is shown only on a server with no client keys
      (``/metrics``, ``/status.json``).
    - ``admin``: the admin key; with none set, refused (403 ``admin_disabled``).
    """

    PUBLIC = "public"
    CLIENT = "client"
    OPERATOR = "operator"
    ADMIN = "admin"


class RequestScope:
    """One request's account; see the module docstring.

    Attributes:
        request_id: Its id (the caller's ``x-request-id`` if valid and holding no secret,
            else ours).
        cluster: The cluster it runs on, pinned when it arrived (a reload does not move it).
        principal: The caller, once authenticated (None before, or on public routes).
        access: The access level of the resource that served it.
        admin: Whether it may see what is the operator's (worker PIDs, the keys' spend):
            it carried the admin key, or the server has no keys at all (open to anyone); set on
            the routes that are not the API (public, operator, admin).
        timing: Where its time went; ``timing.model`` says whether it reached a model.
        charge: The model call's charge, if its resource opened one.
        route: The matched route's template (a bounded metric label).
        fields: Extra fields for its access line.
        trace: Its trace when tracing is on (:mod:`appliance.telemetry`), else None.
        client_gone: Whether the client left (:meth:`left`), as of the request's end:
            from :meth:`finish` on it no longer changes, so the reports say what the
            charge saw.
        status: How it ended, set by :meth:`finish` (see there).
        ended: When it was settled (``perf_counter``; 0 before): its duration ends there.
    """

    __slots__ = (
        "_finished",
        "access",
        "admin",
        "charge",
        "client_gone",
        "cluster",
        "ended",
        "fields",
        "method",
        "path",
        "principal",
        "quota",
        "reports",
        "request_id",
        "route",
        "sinks",
        "started",
        "status",
        "timing",
        "trace",
        "ts",
    )

    def __init__(
        self,
        request_id: str,
        method: str,
        path: str,
        cluster: Cluster,
        sinks: Sequence[Sink] = (),
        reports: Sequence[Report] = (),
    ) -> None:
        self.request_id = request_id
        self.sinks = sinks
        self.reports = reports
        self.method = method
        self.path = path
        self.cluster = cluster
        self.started = time.perf_counter()
        self.ts = time.time()
        self.principal: Principal | None = None
        self.access = Access.PUBLIC
        self.admin = False
        self.timing = Timing()
        self.charge: Charge | None = None
        self.quota: Quota | None = None  # the key's limits after admission (headers)
        self.route: str | None = None
        self.fields: dict[str, Any] = {}
        self.client_gone = False
        self.status = 0
        self.ended = 0.0
        self.trace: RequestTrace | None = None
        self._finished = False

    def note(self, **fields: Any) -> None:
        """Add fields to this request's access line."""
        self.fields.update(fields)

    def open_charge(self, model: str, request: dict[str, Any]) -> Charge:
        """The charge of this request's model call (as the client named the model); the
        request log keeps its reply if ``capture:`` selects the key and model."""
        trace = self.trace
        self.charge = (Charge if trace is None or not trace.recording else TracedCharge)(
            model, request
        )
        capture = self.cluster.config.capture
        if capture.enabled:
            key = self.principal.name if self.principal is not None else "anonymous"
            if capture.wants(key, model, self.cluster.registry.routes.get(model, ())):
                self.charge.keep(capture.max_body_bytes)
        if trace is not None:
            trace.model_call(operation(self.route), model, request, tuple(capture.redact))
        return self.charge

    @property
    def reached_model(self) -> bool:
        """Whether a model's worker took the request (then it has a ledger row)."""
        return self.timing.model is not None

    @property
    def elapsed_s(self) -> float:
        """Its duration so far, or in all once it is settled."""
        return (self.ended or time.perf_counter()) - self.started

    def left(self) -> None:
        """The client left: noted unless the request is settled already."""
        if not self._finished:
            self.client_gone = True

    async def finish(self, http_status: int, *, completed: bool) -> None:
        """Settle how the request ended and feed the sinks that settle it; only the first
        call acts.

        Args:
            http_status: The status sent (0: no response began).
            completed: Whether the response was (or is about to be) sent whole.

        The first to know the outcome calls it: the edge just before a response's last
        bytes, a stream's relay when it closes, and, for every other end (cancelled, cut
        by the drain, failed before any response), the edge once the request is over.
        The status is the client's view of the outcome: 499 if the client left before the
        response was complete; the error's status if a stream failed after its 200;
        otherwise what was sent (500 if nothing was).
        """
        if self._finished:
            return
        self._finished = True
        self.ended = time.perf_counter()
        failure: APIError | None = self.charge.failure if self.charge is not None else None
        if self.client_gone and not completed:
            self.status = CLIENT_CLOSED
        elif failure is not None and http_status < 400:
            self.status = failure.status
        else:
            self.status = http_status or 500
        for sink in self.sinks:
            try:
                result = sink(self)
                if result is not None:
                    await result
            except Exception:
                log.exception("sink_failed", sink=getattr(sink, "__name__", repr(sink)))

    def report(self) -> None:
        """Feed the sinks that report the request (metrics, access line, request log,
        spans), once the response is out: once, after :meth:`finish` (before it, and
        after the first time, it does nothing)."""
        if not self._finished:
            return
        reports, self.reports = self.reports, ()
        for sink in reports:
            try:
                sink(self)
            except Exception:
                log.exception("sink_failed", sink=getattr(sink, "__name__", repr(sink)))


class Request(falcon.asgi.Request):
    """Falcon's request, whose ``context`` is the request's :class:`RequestScope`."""

    def __init__(self, scope: dict[str, Any], receive: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(scope, receive, *args, **kwargs)
        self.context = scope[SCOPE]


def scope_of(req: falcon.asgi.Request) -> RequestScope:
    """The request's scope."""
    found: RequestScope = req.scope[SCOPE]
    return found
