"""Where a request's time went (:class:`Timing`), as the gateway and the edge note it."""

from __future__ import annotations

from appliance.serving.spill import Spill


class Timing:
    """Where a request's time went: the client's body, waiting for a worker, on workers.

    ``model`` is the model whose worker took the request last (None: it reached none),
    which is the model that answered when the request succeeded (for pricing and the
    ``x-appliance-model`` header);
    ``stoppable`` whether that worker stops its work when the call is cancelled
    (:attr:`Worker.stoppable <appliance.backends.base.Worker.stoppable>`); ``spills``
    the route targets it passed over for their expected wait (:mod:`.spill`).
    """

    __slots__ = ("client_s", "model", "queued_s", "spills", "stoppable", "worker_s")

    def __init__(self) -> None:
        self.client_s = 0.0
        self.queued_s = 0.0
        self.worker_s = 0.0
        self.model: str | None = None
        self.stoppable = False
        self.spills: list[Spill] | None = None
