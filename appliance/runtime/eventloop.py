"""The event loop each process of the appliance runs on: uvloop where it installs."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` to completion on a fresh loop (uvloop's, else asyncio's)."""
    try:
        import uvloop
    except ImportError:  # a dependency, but it does not build everywhere (Windows)
        asyncio.run(main)
        return
    uvloop.run(main)
