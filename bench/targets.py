"""The performance targets (issue 30), judged from one run of ``bench/run.py``.

Every target is relative to something measured in the same run (the floor, one process,
LiteLLM), except start-up, whose target is absolute. Ratios are taken round by round
(the appliance against the floor measured just before or after it) and their median
reported: on a shared machine, the drift between rounds cancels out of a ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import NamedTuple

Runs = dict[str, list[dict[str, float]]]


class Target(NamedTuple):
    name: str
    value: float | None  # None: not measured in this run
    limit: float
    unit: str
    at_most: bool = True

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def line(self) -> str:
        verdict = {True: "met", False: "NOT MET", None: "not measured"}[self.met]
        sign = "<=" if self.at_most else ">="
        shown = "-" if self.value is None else f"{self.value:.2f}{self.unit}"
        return f"  {verdict:<12} {self.name}: {shown} (target {sign} {self.limit:g}{self.unit})"


def paired(
    runs: Runs, system: str, other: str, f: Callable[[float, float], float], key: str
) -> float | None:
    """The median over rounds of ``f(system's figure, other's figure)`` for ``key``."""
    if not runs.get(system) or not runs.get(other):
        return None
    pairs = zip(runs[system], runs[other], strict=True)
    return statistics.median(f(a[key], b[key]) for a, b in pairs)


def ratio(runs: Runs, system: str, other: str, key: str) -> float | None:
    return paired(runs, system, other, lambda a, b: a / b, key)


def added(runs: Runs, system: str, key: str) -> float | None:
    """What ``system`` adds to the direct path's ``key`` (ms), median over rounds."""
    return paired(runs, system, "direct", lambda a, b: a - b, key)


def judge(runs: Runs, extra: dict[str, dict[str, float]]) -> list[Target]:
    """Every target, as this run measured it."""
    out = [
        Target(
            "CPU per plain request, appliance / floor",
            ratio(runs, "appliance", "floor", "cpu_ms_per_req"),
            1.4,
            "x",
        ),
        Target(
            "CPU per 16-chunk stream, appliance / floor",
            ratio(runs, "appliance", "floor", "cpu_ms_per_stream"),
            1.5,
            "x",
        ),
    ]
    for key, label in (("p50_c1_ms", "p50"), ("p99_c1_ms", "p99")):
        mine, floor = added(runs, "appliance", key), added(runs, "floor", key)
        over = None if mine is None or floor is None else mine - floor
        out.append(Target(f"added latency at c1 {label}, above the floor's", over, 0.2, " ms"))
    lean = ratio(runs, "litellm", "appliance", "cpu_ms_per_req")
    out.append(Target("LiteLLM's CPU per plain request / the appliance's", lean, 60, "x", False))
    out.append(
        Target(
            "processes: 2, saturated throughput / one process's",
            ratio(runs, "2 processes", "appliance", "rps_c64"),
            1.7,
            "x",
            False,
        )
    )
    out.append(
        Target(
            "processes: 2, CPU per plain request / one process's",
            ratio(runs, "2 processes", "appliance", "cpu_ms_per_req"),
            1.05,
            "x",
        )
    )
    startup = extra.get("appliance", {}).get("startup")
    out.append(Target("start-up to the first 200 (median)", startup, 0.7, " s"))
    return out
