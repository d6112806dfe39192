"""Whether a file or folder the server keeps can be kept where the config puts it.

``appliance check`` and ``serve`` ask before anything starts, so that a bad
``state.usage_path`` or ``capture.path`` is a line in the config's problems, not a traceback
from the server's start-up. Asking creates nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def place_problem(path: Path, existing: Callable[[Path], str | None]) -> str | None:
    """Why ``path`` cannot be used (None: it can).

    Args:
        path: The file or folder.
        existing: What is wrong with ``path`` when it exists (None: nothing); when it does
            not, the nearest folder above that exists must let ``path`` be created there.
    """
    try:
        return existing(path) if path.exists() else creation_problem(path)
    except OSError as exc:  # a folder on the way that may not be searched, and such
        return f"cannot use {path}: {exc.strerror or exc}"


def creation_problem(path: Path) -> str | None:
    """Why ``path``, which does not exist, cannot be created with its missing folders."""
    above = path.parent
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():
        return f"cannot create {path}: {above} is not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"cannot create {path}: {above} cannot be written"
    return None
