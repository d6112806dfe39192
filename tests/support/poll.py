"""Waiting in tests: the one way is to poll a condition until a generous deadline.

A shared 2-core machine can be slow at any moment, so a test never sleeps a fixed time and
then asserts, and never asserts that something happened within a wall-clock bound. It
polls what it waits for, with a deadline long enough that only a real failure reaches it,
and the failure message says what was last seen.

For "nothing happens" (a watcher must not react), poll for a positive sign that the thing
being watched has had its chance (:func:`settled`), then assert the absence.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE_S = 30.0
_STEP_S = 0.02
_MAX_STEP_S = 0.25


class PollTimeout(AssertionError):
    """The condition did not hold by the deadline; says what was last seen."""


def until(
    probe: Callable[[], T | None],
    *,
    accept: Callable[[T], object] | None = None,
    timeout: float = DEADLINE_S,
    what: str = "the condition",
) -> T:
    """Call ``probe`` until it returns something truthy (or that ``accept`` takes); return
    that value.

    An exception from ``probe`` counts as "not yet" (a server still starting refuses
    connections) and is reported if the deadline passes.
    """
    deadline = time.monotonic() + timeout
    step = _STEP_S
    last: object = None
    while True:
        try:
            value = probe()
        except Exception as exc:  # "not yet", reported at the deadline
            last = exc
        else:
            if value is not None and (accept(value) if accept is not None else value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise PollTimeout(f"{what} did not hold within {timeout:g}s; last seen: {last!r}")
        time.sleep(step)  # the poll's own pacing: the only sleep a test needs
        step = min(step * 1.5, _MAX_STEP_S)


async def until_async(
    probe: Callable[[], Awaitable[T | None] | T | None],
    *,
    timeout: float = DEADLINE_S,  # noqa: ASYNC109 - the same signature as until()
    what: str = "the condition",
) -> T:
    """:func:`until` for a test on the event loop; ``probe`` may be async."""
    deadline = time.monotonic() + timeout
    step = _STEP_S
    last: object = None
    while True:
        try:
            value = probe()
            if isinstance(value, Awaitable):
                value = await value
        except Exception as exc:  # "not yet", reported at the deadline
            last = exc
        else:
            if value:
                return value
            last = value
        if time.monotonic() >= deadline:
            raise PollTimeout(f"{what} did not hold within {timeout:g}s; last seen: {last!r}")
        await asyncio.sleep(step)
        step = min(step * 1.5, _MAX_STEP_S)


def settled(probe: Callable[[], T], *, quiet_s: float = 0.5, timeout: float = DEADLINE_S) -> T:
    """Poll ``probe`` until its value has stayed the same for ``quiet_s``; return it.

    For a count that grows while work drains (log lines, metrics): the value once nothing
    more is coming.
    """
    deadline = time.monotonic() + timeout
    value = probe()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(_STEP_S * 5)
        now = probe()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return value
    raise PollTimeout(f"the value kept changing for {timeout:g}s; last seen: {value!r}")


async def settled_async(
    probe: Callable[[], T],
    *,
    quiet_s: float = 0.5,
    timeout: float = DEADLINE_S,  # noqa: ASYNC109 - the same signature as settled()
) -> T:
    """:func:`settled` for a test on the event loop."""
    deadline = time.monotonic() + timeout
    value = probe()
    since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(_STEP_S * 5)
        now = probe()
        if now != value:
            value, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return value
    raise PollTimeout(f"the value kept changing for {timeout:g}s; last seen: {value!r}")


def in_background(work: Callable[[], T], *, timeout: float = DEADLINE_S) -> Callable[[], T]:
    """Run ``work`` in a thread now; the returned function waits for its result.

    An exception in ``work`` is raised again by the returned function, so a failure in the
    background is not lost as an ``IndexError``.
    """
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(work())
        except BaseException as exc:  # raised again in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> T:
        thread.join(timeout)
        if thread.is_alive():
            raise PollTimeout(f"the background call did not finish within {timeout:g}s")
        if errors:
            raise errors[0]
        return box[0]

    return result
