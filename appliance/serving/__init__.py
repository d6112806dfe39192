"""Serving, run in each server process.

The cluster, its registry of models, dispatch, health and hot reload.
"""

from __future__ import annotations

from appliance.config import Check, tls_files
from appliance.local import CONFIG_CHECKS

CHECKS: tuple[Check, ...] = (*CONFIG_CHECKS, tls_files)
"""What a config to be served must pass beyond its text, by ``appliance check`` and
``serve`` and on every reload: local models fit the memory budget, TLS files load."""

__all__ = ["CHECKS"]
