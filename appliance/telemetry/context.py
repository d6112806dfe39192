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

from appliance.wire.usage import UNPARSED, Usage


class Active(Protocol):
    """The span that is current for a request's code (the request's, a model call's, an
    attempt's): what child spans hang from and what the upstream is told."""

    def waiting(self, model: str, loading: Callable[[], bool]) -> AbstractContextManager[Any]:
        """A wait for a slot (see :func:`waiting`)."""

    def attempt(self, worker_id: str, backend: str) -> AbstractContextManager[Any]:
        """An attempt on a worker (see :func:`attempt`)."""

    def traceparent(self) -> str:
        """This span's W3C ``traceparent``."""


class RequestTrace(Protocol):
    """One request's trace as the HTTP layer drives it (see :mod:`.tracer`)."""

    trace_id: str
    span_id: str
    recording: bool  # sampled: its spans are recorded and exported

    def model_call(
        self, operation: str, model: str, request: dict[str, Any], redact: tuple[str, ...]
    ) -> None:
        """The request's model call begins (its GenAI span); captured content has the
        ``redact`` patterns (``capture.redact``) applied."""

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
        parsed: Any = UNPARSED,
    ) -> None:
        """The model call is over: its outcome, then its span ends. ``parsed`` is the
        plain ``reply`` as the usage read parsed it, if it did (see
        :func:`~appliance.wire.usage.read_reply`): what it says is read there."""

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
    """The wait for a slot on ``model``: a ``load {model}`` span when the request waits for
    the model to load (a cold start, ``loading()`` says), a ``queue {model}`` span when it
    waited for a slot (1 ms or more), none when a slot was free."""
    active = CURRENT.get()
    return _NOTHING if active is None else active.waiting(model, loading)


def attempt(worker_id: str, backend: str) -> AbstractContextManager[Any]:
    """One attempt of the model call on one worker. A first attempt that succeeds is the
    model call's own span (no span of its own: the upstream's ``traceparent`` names the
    model call's, before it is known whether it fails); one that fails gets an
    ``attempt {worker}`` span with why, recorded then, and every attempt after it (a
    failover) gets its own span from its start, which its upstream is told."""
    active = CURRENT.get()
    return _NOTHING if active is None else active.attempt(worker_id, backend)
