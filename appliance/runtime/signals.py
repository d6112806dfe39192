"""The signals between the main process, its Granian worker processes, and operators.

- ``SIGHUP`` (to the main process, or ``appliance reload``): every worker process reloads
  cluster.yaml in place. The main process forwards it; Granian's own respawn is not used.
- ``SIGTERM`` / ``SIGINT`` (to the main process): graceful shutdown. The main process
  first sends ``DRAIN_SIGNAL`` to each worker, which then gives open streams
  ``server.drain_timeout_s`` to finish before ending them with an SSE error event;
  Granian stops accepting and waits for requests in flight.
- ``ADMIN_SIGNAL`` (from one worker process to the others): an admin load or unload is
  waiting in the runtime folder for every process to carry out
  (:mod:`appliance.runtime.commands`).
"""

from __future__ import annotations

import signal

RELOAD_SIGNAL = signal.SIGHUP
DRAIN_SIGNAL = signal.SIGUSR1
ADMIN_SIGNAL = signal.SIGUSR2


def ignore_until_handled() -> None:
    """In a worker process: ignore these signals until the app installs its handlers.

    Their default action would end the process.
    """
    signal.signal(RELOAD_SIGNAL, signal.SIG_IGN)
    signal.signal(DRAIN_SIGNAL, signal.SIG_IGN)
    signal.signal(ADMIN_SIGNAL, signal.SIG_IGN)
