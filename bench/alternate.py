"""The command line the in-process benchmarks share, ``--compare OLD NEW`` above all.

A benchmark built on :func:`main` measures in its own process and prints its figures.
With ``--compare OLD NEW`` it runs itself again as child processes (``--json``, its own
counts passed on), each with one tree's ``appliance`` package first on ``PYTHONPATH``,
alternating the trees round by round, the order flipping every round so that a machine
whose speed drifts weighs on both alike; then it prints each figure's median in each tree,
their ratio new/old and, where its table asks, every run. ``bench/edge.py``,
``bench/sinks.py``, ``bench/relay.py`` and ``bench/client.py`` use it: each says what it
counts, how one run measures and prints, and how its comparison reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Table:
    """How a comparison prints: ``title``, formatted with the command line's options
    (``{rounds}``, ``{requests}``, ...); a column ``header``, if any; and a ``row`` a
    figure, formatted with ``name``, ``old`` and ``new`` (the medians), ``ratio``
    (new/old) and ``runs`` (each run's figure, old | new, to ``digits`` decimals)."""

    title: str
    row: str
    header: str = ""
    digits: int = 0


def main(
    doc: str,
    script: str,
    counts: dict[str, int],
    *,
    rounds: int,
    measure: Callable[[argparse.Namespace], Any],
    show: Callable[[argparse.Namespace, Any], None],
    table: Table,
    figures: Callable[[Any], dict[str, float]] = dict,
) -> None:
    """The benchmark ``script`` (its ``__file__``; ``doc``, its docstring, gives
    ``--help``'s line) with an integer option for each of ``counts`` (name: default),
    ``--rounds`` and ``--compare OLD NEW``. ``measure`` makes one run's figures (anything
    JSON can carry), ``show`` prints them; ``figures`` turns them into the numbers the
    comparison sets side by side, by name."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, default in counts.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        if args.rounds < 1:
            parser.error("--compare needs --rounds of 1 or more")
        for tree in args.compare:
            # Not there, the child would import the installed appliance, and compare it.
            if not (Path(tree) / "appliance" / "__init__.py").is_file():
                parser.error(f"{tree} holds no appliance package")
        argv = [sys.executable, script, "--json"]
        for name in counts:
            argv += [f"--{name}", str(getattr(args, name))]
        runs = alternate(argv, args.compare, args.rounds)
        old, new = ([figures(run) for run in each] for each in runs)
        compare(table, old, new, vars(args))
    elif args.json:
        print(json.dumps(measure(args)))
    else:
        show(args, measure(args))


def alternate(argv: list[str], trees: list[str], rounds: int) -> tuple[list[Any], list[Any]]:
    """Each tree's runs of ``argv`` (whose last line out is its figures, as JSON), with
    that tree first on ``PYTHONPATH``: ``rounds`` each, the trees taking turns."""
    runs: tuple[list[Any], list[Any]] = ([], [])
    for i in range(rounds):
        for at in (0, 1) if i % 2 == 0 else (1, 0):
            done = subprocess.run(
                argv,
                env={**os.environ, "PYTHONPATH": trees[at]},
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:  # what it said, not only that it failed
                sys.exit(f"a run with {trees[at]} failed ({done.returncode}):\n{done.stderr}")
            runs[at].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def compare(
    table: Table, old: list[dict[str, float]], new: list[dict[str, float]], options: dict[str, Any]
) -> None:
    """Prints ``table`` for the figures of the first old run: those that the new tree
    has too (a tree may lack one, e.g. a sink added since)."""
    print(table.title.format(**options))
    if table.header:
        print(table.header)
    for name in old[0]:
        a = [run[name] for run in old if name in run]
        b = [run[name] for run in new if name in run]
        if not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        runs = " | ".join(" ".join(f"{v:.{table.digits}f}" for v in each) for each in (a, b))
        print(table.row.format(name=name, old=ma, new=mb, ratio=mb / ma, runs=runs))


def on_uvloop(work: Coroutine[Any, Any, T]) -> T:
    """Runs ``work`` on the loop the appliance serves on: uvloop's (asyncio's where
    uvloop is not installed)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)
