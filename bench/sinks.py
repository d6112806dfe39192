"""What each sink of a finished request costs, inside real requests through the whole app.

``python bench/sinks.py`` drives the app in-process as ``bench/edge.py`` does (raw ASGI
calls, uvloop, the scripted model, the served JSON logging written to ``/dev/null``) and
times every sink of the request scope (charging, which settles the request, and the
reports: counting, the access line, ...) with ``perf_counter`` around each call, so
that each is measured where it runs: after the request's own work, with its caches as a
real request leaves them. It prints the median and the mean microseconds of each sink over plain and
streamed requests.

``python bench/sinks.py --compare OLD NEW`` runs it with each tree's ``appliance``
package first on ``PYTHONPATH``, alternating, and prints the median of each sink's
medians and their ratio. It is a benchmark: it prints figures and fails on nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alternate
from edge import BODY, CONFIG, STREAM, _one, started_app


class Timed:
    """A sink, timed: the nanoseconds of each call go to ``samples``."""

    def __init__(self, sink: Callable[[Any], Any], samples: list[int]) -> None:
        self.sink = sink
        self.samples = samples
        self.__name__ = getattr(sink, "__name__", type(sink).__name__)

    def __call__(self, scope: Any) -> Any:
        started = time.perf_counter_ns()
        result = self.sink(scope)
        self.samples.append(time.perf_counter_ns() - started)
        return result


async def measure(requests: int) -> dict[str, dict[str, float]]:
    """Each sink's median and mean microseconds per request, keyed ``name``."""
    app, cluster = await started_app(CONFIG)
    samples: dict[str, list[int]] = {}
    # What settles a request (before its last bytes) and what reports it (after them);
    # a tree from before the two were told apart has its sinks only.
    for sinks in (app.sinks, getattr(app, "reports", [])):
        sinks[:] = [Timed(sink, samples.setdefault(_name(sink), [])) for sink in sinks]
    try:
        for body in (BODY, STREAM):
            for _ in range(50):  # warm
                await _one(app, body)
        for each in samples.values():
            each.clear()
        for i in range(requests):
            status = await _one(app, BODY if i % 2 else STREAM)
            assert status == 200, status
    finally:
        await cluster.close()
    return {
        name: {"median": statistics.median(ns) / 1000, "mean": statistics.fmean(ns) / 1000}
        for name, ns in samples.items()
    }


def _name(sink: Any) -> str:
    return str(getattr(sink, "__name__", type(sink).__name__))


def show(args: argparse.Namespace, figures: dict[str, dict[str, float]]) -> None:
    print(f"Microseconds per sink call over {args.requests} requests (half of them streams)")
    for name, figure in figures.items():
        print(f"{name:14} median {figure['median']:7.2f}   mean {figure['mean']:7.2f}")


TABLE = alternate.Table(
    title="Microseconds per sink call, median of each run's median, {rounds} runs each",
    header=f"{'':14}{'old':>9}{'new':>9}{'new/old':>9}   runs old | new",
    row="{name:14}{old:>9.2f}{new:>9.2f}{ratio:>9.2f}   {runs}",
    digits=1,
)


def main() -> None:
    alternate.main(
        __doc__ or "",
        __file__,
        {"requests": 4000},
        rounds=6,
        measure=lambda args: alternate.on_uvloop(measure(args.requests)),
        show=show,
        table=TABLE,
        figures=lambda run: {name: figure["median"] for name, figure in run.items()},
    )


if __name__ == "__main__":
    main()
