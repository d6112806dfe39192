"""A request's trace as the code below the edge sees it: one context variable.

When tracing is on, the edge starts each request's trace and sets :data:`CURRENT` for the
request's task; whatever runs for the request (the gateway, a backend) makes its child
spans and the upstream's ``traceparent`` from it. When tracing is off nothing is ever set,
and each helper here costs one :meth:`ContextVar.get`: no OpenTelemetry import, no span.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from contextvars import ContextVar
from typing import Any, Protocol

from appliance.wire.usage import Usage


class Active(Protocol):
    """The span that is current for a request's code (the request's, a model call's, an
    attempt's): what child spans hang from and what the upstream is told."""

    def child(
        self, name: str, attributes: dict[str, Any], *, attempt: bool = False
    ) -> AbstractContextManager[Any]:
        """A span under this one, current while the ``with`` block runs."""

    def traceparent(self) -> str:
        """This span's W3C ``traceparent``."""


class RequestTrace(Protocol):
    """One request's trace as the HTTP layer drives it (see :mod:`.tracer`)."""

    trace_id: str
    span_id: str

    def model_call(self, operation: str, model: str, request: dict[str, Any]) -> None:
        """The request's model call begins (its GenAI span)."""

    def first_token(self, seconds: float) -> None:
        """A stream's first chunk came ``seconds`` after the request."""

    def end_model_call(
        self,
        *,
        response_model: str | None,
        usage: Usage | None,
        finish_reasons: list[str],
        error: str | None,
        reply: bytes | None,
    ) -> None:
        """The model call is over: its outcome, then its span ends."""

    def end(self, *, route: str | None, status: int) -> None:
        """The request is over: its server span ends."""

    def detach(self) -> None:
        """The request's task is done with the trace (:data:`CURRENT` is reset)."""


CURRENT: ContextVar[Active | None] = ContextVar("appliance_trace", default=None)

_NOTHING: AbstractContextManager[Any] = contextlib.nullcontext()


def traceparent() -> str | None:
    """The ``traceparent`` to send upstream for the current request (None: not traced)."""
    active = CURRENT.get()
    return None if active is None else active.traceparent()


def waiting(model: str, loading: Callable[[], bool]) -> AbstractContextManager[Any]:
    """The wait for a slot on ``model``: ``load {model}`` when it waits for the model to
    load (a cold start, ``loading()`` says), else ``queue {model}``."""
    active = CURRENT.get()
    if active is None:
        return _NOTHING
    what = "load" if loading() else "queue"
    return active.child(f"{what} {model}", {"appliance.model": model, "appliance.wait": what})


def attempt(worker_id: str, backend: str) -> AbstractContextManager[Any]:
    """One attempt of the model call on one worker; an error it ends with (and whether the
    request fails over) is recorded on its span."""
    active = CURRENT.get()
    if active is None:
        return _NOTHING
    return active.child(
        f"attempt {worker_id}",
        {"appliance.worker": worker_id, "appliance.backend": backend},
        attempt=True,
    )
