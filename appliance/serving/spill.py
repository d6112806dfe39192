"""Spill on expected wait: a route's target that would keep a request waiting too long is
passed over at once for the next one.

A route with ``spill_after_s`` asks each of its targets but the last, before queueing
there, how long the request would wait for a slot (:func:`expected_wait`): its place in
the model's queue (its class and the classes above it) times the model's mean service
time over its slots, or, for a local model that is not loaded, how long its last load
took (less what the load under way has done). Longer than ``spill_after_s``, or not
known yet (every slot taken before any request finished, a model never loaded in this
process), and the request goes to the next target at once. A local model passed over
because it is not loaded starts loading (:func:`spill_past`), so that the requests after
it find it ready: local first, cloud meanwhile. Once the first target's expected wait is
short again (a slot free: 0), requests go back to it.

The request's :class:`Spill` records say which targets it passed over and why: the access
line's ``spilled`` field and ``appliance_spills_total{model,reason}`` read them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from appliance.config import Priority
from appliance.errors import APIError
from appliance.local.states import State
from appliance.serving.registry import ModelGroup

QUEUE = "queue"  # its slots are taken and its queue is long
LOAD = "load"  # a local model that is not loaded (or reloading)


@dataclass(frozen=True, slots=True)
class Spill:
    """A target a request passed over: the model, why (:data:`QUEUE` or :data:`LOAD`) and
    the wait expected there (None: unknown)."""

    model: str
    reason: str
    expected_wait_s: float | None

    def as_dict(self) -> dict[str, object]:
        """For the access line."""
        wait = self.expected_wait_s
        return {
            "model": self.model,
            "reason": self.reason,
            "expected_wait_s": None if wait is None else round(wait, 3),
        }


def expected_wait(group: ModelGroup, priority: Priority) -> tuple[float | None, str]:
    """How long a request of class ``priority`` would wait for a slot of ``group`` now
    (None: unknown), and what it would wait for (:data:`QUEUE` or :data:`LOAD`)."""
    lifecycle = group.lifecycle
    if lifecycle is None or lifecycle.state in (State.LOADED, State.FAILED):
        # A failed model refuses at once (503 model_load_failed): the route moves on.
        return group.dispatcher.expected_wait_s(priority), QUEUE
    if lifecycle.load_s is None:
        return None, LOAD
    done = time.monotonic() - lifecycle.load_started if lifecycle.state is State.LOADING else 0
    return max(lifecycle.load_s - done, 0.0), LOAD


def spill_past(group: ModelGroup, priority: Priority, spill_after_s: float) -> Spill | None:
    """A :class:`Spill` if a request should pass ``group`` over, else None (it queues
    there). A local model passed over for its load starts loading."""
    wait, reason = expected_wait(group, priority)
    if wait is not None and wait <= spill_after_s:
        return None
    if reason == LOAD and group.lifecycle is not None:
        with contextlib.suppress(APIError):  # its last load failed: those queued hear why
            group.lifecycle.demand()
    return Spill(group.name, reason, wait)
