"""The server side of local models, run in each server process.

Each local model has a supervisor of its child processes (:mod:`.worker`), a lifecycle
that decides when they run (:mod:`.lifecycle`), and a place in the memory budget
(:mod:`.residency`, with estimates from :mod:`.memory`).
"""

from __future__ import annotations

from appliance.config import Check
from appliance.local.memory import budget_problems

CONFIG_CHECKS: tuple[Check, ...] = (budget_problems,)
"""What a config to be served must pass beyond its text: local models fit the budget."""

__all__ = ["CONFIG_CHECKS"]
