"""The cyclic garbage collector, set for a long-running server.

A serving process builds its heap once (modules, config, models' metadata, the app) and
then allocates short-lived objects per request. With Python's defaults, collections run
every 700 net allocations (several per request) and every full collection walks the whole
start-up heap again. So:

- :func:`tune` raises the first generation's threshold (collections run 14x less often;
  the objects of a request are mostly freed by reference counting before then); the older
  generations are collected every 20 younger collections (Python's default: 10).
- :func:`freeze` moves what exists once the app has started out of the collector's sight
  (:func:`gc.freeze`), as it is: imports leave next to no garbage (12 objects when
  measured), and a full collection first would cost 45 ms of start-up for nothing.
- :func:`settle` does it again after a reload retired a cluster. Objects frozen are never
  collected, so then everything is unfrozen and collected first: the retired cluster is
  freed, not kept forever.

Measured with ``bench/`` (CPU per proxied request): see the README's Performance section.
"""

from __future__ import annotations

import gc
import time

import structlog

log = structlog.get_logger("appliance.heap")

THRESHOLDS = (10_000, 20, 20)


def tune() -> None:
    """Collect less often than Python's default (call once per process, at start)."""
    gc.set_threshold(*THRESHOLDS)


def freeze() -> None:
    """Freeze the heap as it is (once the app has started: nothing retired to collect)."""
    gc.freeze()
    log.debug("heap_frozen", frozen=gc.get_freeze_count())


def settle(why: str) -> None:
    """Collect everything collectable, then freeze what is left (the long-lived heap)."""
    started = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    gc.freeze()
    log.debug(
        "heap_settled",
        why=why,
        freed=freed,
        frozen=gc.get_freeze_count(),
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
