"""Serving a request: resolve the name, check the key, pick a worker, fail over.

A request may fail over only before anything reached the client: a retryable error
(connect failure, upstream 5xx or 429, timeout, no capacity) moves it to another worker of
the same model, then to the route's next target, within the model's ``retries`` and
``timeout_s``. Once a stream
has been handed out, its errors are the stream's to report.

A route with ``spill_after_s`` also moves on before trying a target whose expected wait
is longer (:mod:`.spill`), and past one whose backend does not take a field of the request
(that 400 is the answer if no target took it). Waiting requests are served in the order
of the caller's priority class and key (:mod:`.scheduling`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple, TypeVar

import orjson
import structlog

from appliance import telemetry
from appliance.accounting.auth import Principal
from appliance.backends.base import ReplyStream, Worker
from appliance.errors import (
    APIError,
    InvalidRequestError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamTimeoutError,
)
from appliance.runtime.deadline import Deadline
from appliance.runtime.timers import Timers
from appliance.serving.registry import ModelGroup, Registry
from appliance.serving.spill import spill_past
from appliance.serving.timing import Timing
from appliance.wire import usage
from appliance.wire.openai.protocol import Endpoint
from appliance.wire.usage import Usage

T = TypeVar("T")

_SERVES = {
    Endpoint.CHAT: "llm",
    Endpoint.COMPLETIONS: "llm",
    Endpoint.EMBEDDINGS: "embedding",
    Endpoint.RERANK: "rerank",
    Endpoint.RESPONSES: "llm",
}

# What each type of model is, in a sentence.
_KINDS = {"llm": "a language model", "embedding": "an embedding model", "rerank": "a rerank model"}

log = structlog.get_logger("appliance.gateway")


class Gateway:
    """Runs requests against the registry's workers."""

    def __init__(self, registry: Registry, timers: Timers) -> None:
        self.registry = registry
        self.timers = timers

    async def call(
        self,
        principal: Principal,
        endpoint: Endpoint,
        body: dict[str, Any],
        timing: Timing | None = None,
        session: str | None = None,
    ) -> bytes:
        """One plain request; returns the reply's JSON bytes."""
        targets = self._targets(principal, endpoint, body)
        result, _ = await self._attempt(
            targets, lambda w: w.call(endpoint, body), hold=False, timing=timing, session=session
        )
        return result

    async def open_stream(
        self,
        principal: Principal,
        endpoint: Endpoint,
        body: dict[str, Any],
        timing: Timing | None = None,
        session: str | None = None,
        *,
        usage: bool = False,
    ) -> ReplyStream:
        """Open a stream; the worker's slot is held until the stream is closed.

        With ``usage`` the backend is asked for a usage chunk (see ``Worker.open_stream``).
        """
        targets = self._targets(principal, endpoint, body)

        async def open_on(worker: Worker) -> ReplyStream:
            return await worker.open_stream(endpoint, body, usage=usage)

        stream, (group, worker) = await self._attempt(
            targets, open_on, hold=True, timing=timing, session=session
        )
        return _LeasedStream(stream, group, worker)

    async def embeddings(
        self, principal: Principal, body: dict[str, Any], timing: Timing | None = None
    ) -> bytes:
        """Embeddings, a list of inputs split over the model's workers."""
        targets = self._targets(principal, Endpoint.EMBEDDINGS, body)
        inputs = body["input"]
        parts = _split(inputs, len(targets.groups[0].available_workers()))
        if len(parts) < 2:
            return await self.call(principal, Endpoint.EMBEDDINGS, body, timing)
        # The parts run side by side: the slowest one is the request's worker time.
        timings = [Timing() for _ in parts]

        def embed(part: Any) -> Callable[[Worker], Awaitable[bytes]]:
            async def on(worker: Worker) -> bytes:
                if timing is not None and timing.model is None:
                    # A model took the request now, not once every part is back: a client
                    # that leaves meanwhile is charged what the workers still do.
                    timing.model, timing.stoppable = worker.config.name, worker.stoppable
                return await worker.call(Endpoint.EMBEDDINGS, {**body, "input": part})

            return on

        replies = await asyncio.gather(
            *(
                self._attempt(targets, embed(part), hold=False, timing=t)
                for part, t in zip(parts, timings, strict=True)
            ),
            return_exceptions=True,
        )
        if timing is not None:
            timing.worker_s += max(t.worker_s + t.queued_s for t in timings)
            timing.model = timings[0].model
            timing.spills = [spill for t in timings for spill in t.spills or ()] or None
        bodies: list[bytes] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            bodies.append(reply[0])
        return orjson.dumps(_merge_embeddings(bodies))

    def _targets(self, principal: Principal, endpoint: Endpoint, body: dict[str, Any]) -> _Targets:
        name = body["model"]
        principal.check(name)
        groups = self.registry.resolve(name)
        kind = groups[0].config.type
        if kind != _SERVES[endpoint]:
            raise InvalidRequestError(
                f"The model `{name}` is {_KINDS.get(kind, kind)}; it does not serve "
                f"/{endpoint.value}.",
                param="model",
                code="model_not_supported",
            )
        return _Targets(groups, principal, self.registry.spill_after_s.get(name), endpoint, body)

    async def _attempt(
        self,
        targets: _Targets,
        operation: Callable[[Worker], Awaitable[T]],
        *,
        hold: bool,
        timing: Timing | None = None,
        session: str | None = None,
    ) -> tuple[T, tuple[ModelGroup, Worker]]:
        """Run ``operation`` on a worker, failing over on retryable errors.

        The requested model's ``retries`` and ``timeout_s`` bound the whole attempt,
        queueing included.
        """
        policy = targets.groups[0].config
        try:
            with Deadline(policy.timeout_s, self.timers):
                return await self._failover(
                    targets, operation, policy.retries + 1, hold, timing or Timing(), session
                )
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"No answer within the model's deadline of {policy.timeout_s:g}s."
            ) from None

    async def _failover(
        self,
        targets: _Targets,
        operation: Callable[[Worker], Awaitable[T]],
        attempts: int,
        hold: bool,
        timing: Timing,
        session: str | None,
    ) -> tuple[T, tuple[ModelGroup, Worker]]:
        last: APIError | None = None
        refused: APIError | None = None
        clock = time.perf_counter
        groups, principal, spill_after_s, endpoint, body = targets
        for group in groups:
            if spill_after_s is not None and group is not groups[-1]:
                spilled = spill_past(group, principal.priority, spill_after_s)
                if spilled is not None:
                    timing.spills = [*(timing.spills or ()), spilled]
                    continue
            refusal = group.refusal(endpoint, body)
            if refusal is not None:
                refused = refused or refusal  # the route's next target may take it
                continue
            tried: list[Worker] = []
            while attempts > 0 and len(tried) < len(group.workers):
                started = clock()
                try:
                    affinity = session if group.config.routing == "affinity" else None
                    with telemetry.waiting(group.name, group.waits_for_load):
                        worker = await group.acquire(
                            tried, affinity, principal.priority, principal.name
                        )
                except APIError as exc:
                    last = exc
                    break
                finally:
                    timing.queued_s += clock() - started
                attempts -= 1
                timing.model = group.config.name
                timing.stoppable = worker.stoppable
                started = clock()
                try:
                    with telemetry.attempt(worker.worker_id, worker.config.backend):
                        result = await operation(worker)
                except APIError as exc:
                    timing.worker_s += clock() - started
                    group.release(worker)
                    if exc.worker_fault:
                        group.report(worker, ok=False)
                    if not exc.retryable:
                        raise
                    log.warning(
                        "attempt_failed",
                        worker=worker.worker_id,
                        error=type(exc).__name__,
                        status=exc.status,
                        attempts_left=attempts,
                    )
                    last = exc
                    tried.append(worker)
                    continue
                except BaseException:
                    group.release(worker)
                    raise
                timing.worker_s += clock() - started
                group.report(worker, ok=True)
                if not hold:
                    group.release(worker)
                return result, (group, worker)
        if last is None:
            last = refused or ServiceUnavailableError("No worker could take it.", retry_after=1)
        raise last


class _Targets(NamedTuple):
    """What a request may run on: the groups in order, for whom, when to spill; and it."""

    groups: list[ModelGroup]
    principal: Principal
    spill_after_s: float | None
    endpoint: Endpoint
    body: dict[str, Any]


class _LeasedStream:
    """A worker's stream that gives the worker's slot back when closed."""

    def __init__(self, stream: ReplyStream, group: ModelGroup, worker: Worker) -> None:
        self._stream = stream
        self._group = group
        self._worker: Worker | None = worker

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            await self._stream.aclose()
        finally:
            self._group.release(worker)


def _split(inputs: Any, ways: int) -> list[Any]:
    """Contiguous parts of a batch of inputs, one per worker."""
    if isinstance(inputs, str) or not inputs or isinstance(inputs[0], int):
        return [inputs]
    ways = max(1, min(ways, len(inputs)))
    size, extra = divmod(len(inputs), ways)
    parts, start = [], 0
    for i in range(ways):
        end = start + size + (1 if i < extra else 0)
        parts.append(inputs[start:end])
        start = end
    return parts


def _merge_embeddings(bodies: list[bytes]) -> dict[str, Any]:
    """One embeddings reply from the replies to consecutive parts of the input.

    Items are renumbered by position; ``usage`` is the sum of the parts' (absent if no
    part stated one: the request is then charged an estimate).
    """
    merged: dict[str, Any] | None = None
    data: list[Any] = []
    total: Usage | None = None
    for body in bodies:
        part = usage.parse(body)
        items = part.get("data") if isinstance(part, dict) else None
        if not isinstance(part, dict) or not isinstance(items, list):
            raise UpstreamConnectionError("The backend sent an embeddings reply without data.")
        if merged is None:
            merged = part
        for item in items:
            if isinstance(item, dict):
                item["index"] = len(data)
            data.append(item)
        found = usage.usage_of(part)
        if found is not None:
            total = found if total is None else total + found
    assert merged is not None
    merged["data"] = data
    if total is None:
        merged.pop("usage", None)
    else:
        merged["usage"] = {"prompt_tokens": total.prompt, "total_tokens": total.total}
    return merged
