"""How this program runs itself again: a worker child is the same program.

Installed, that is this interpreter running the ``appliance`` package; frozen (the single
binary, packaging/build-binary.sh), it is the binary itself, which takes the same
subcommands. Either way no other Python on the machine is involved.
"""

from __future__ import annotations

import sys


def self_command(*args: str) -> list[str]:
    """The argv that runs this program's CLI with ``args`` (e.g. ``"worker", ...``)."""
    if getattr(sys, "frozen", False):
        return [sys.executable, *args]
    return [sys.executable, "-m", "appliance", *args]
