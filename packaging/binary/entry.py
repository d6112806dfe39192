"""The frozen program's entry point: ``appliance`` with the default config built in.

Without ``-c`` and ``APPLIANCE_CONFIG``, ``appliance`` reads ``configs/cluster.yaml`` in
the working folder; a binary copied alone onto a server has none, so there it falls back
to the copy of the repository's ``configs/cluster.yaml`` that the build put inside it.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # Granian's processes are forked on Linux; a spawned one would arrive here.
    multiprocessing.freeze_support()
    if "APPLIANCE_CONFIG" not in os.environ and not Path("configs/cluster.yaml").is_file():
        bundled = Path(getattr(sys, "_MEIPASS", Path(__file__).parent)) / "configs/cluster.yaml"
        os.environ["APPLIANCE_CONFIG"] = str(bundled)

    from appliance.cli import main

    raise SystemExit(main())
