"""What a request's time limit costs: ``python bench/timers.py``.

A request arms timers that it almost always cancels (its body's limit, its model call's,
a stream's sends, the watch for a client that leaves). This times, on uvloop as served,
side by side in one run and alternating: a loop timer armed and cancelled
(``loop.call_later``), the same through :class:`appliance.runtime.timers.Timers`, and a
whole :class:`appliance.runtime.deadline.Deadline` block on each (the old one rebuilt here
on ``call_later``). It prints the median of the rounds in nanoseconds and fails on nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

from alternate import on_uvloop

from appliance.runtime.deadline import Deadline
from appliance.runtime.timers import Timers


def _nothing() -> None:
    pass


class LoopDeadline(Deadline):
    """The Deadline before Timers: a loop timer of its own per block."""

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        assert task is not None
        self._task, self._cancelling, self._expired = task, task.cancelling(), False
        self._handle = asyncio.get_running_loop().call_later(30, self._expire)  # type: ignore[assignment]
        return self


async def measure(count: int, rounds: int) -> dict[str, list[float]]:
    loop = asyncio.get_running_loop()
    timers = Timers()

    def loop_timer() -> None:
        loop.call_later(30, _nothing).cancel()

    def shared_timer() -> None:
        timers.call_later(30, _nothing).cancel()

    def loop_deadline() -> None:
        with LoopDeadline(30, timers):
            pass

    def shared_deadline() -> None:
        with Deadline(30, timers):
            pass

    cases: dict[str, Callable[[], None]] = {
        "call_later + cancel": loop_timer,
        "Timers.call_later + cancel": shared_timer,
        "Deadline on call_later": loop_deadline,
        "Deadline on Timers": shared_deadline,
    }
    out: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(rounds):
        for name in list(cases) if round_ % 2 == 0 else list(cases)[::-1]:
            one = cases[name]
            started = time.perf_counter()
            for _ in range(count):
                one()
            out[name].append((time.perf_counter() - started) / count * 1e9)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    out = on_uvloop(measure(args.count, args.rounds))
    print(f"ns per use, median of {args.rounds} rounds of {args.count}")
    for name, runs in out.items():
        print(f"  {name:28}{statistics.median(runs):8.0f}")


if __name__ == "__main__":
    main()
