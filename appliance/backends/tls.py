"""TLS for upstream connections, and aiohttp imported without certificates nobody uses.

aiohttp builds two default TLS contexts when it is imported, loading the system's CA
certificates into each (tens of milliseconds of CPU at every start), whether or not any
request ever goes over TLS. The appliance never uses them: a worker whose upstream is
``https`` gives its connector the context of :func:`client_context`, made on first use.
So :func:`import_aiohttp` has aiohttp skip that loading (the contexts it keeps verify
nothing and are never handed out), and a start whose upstreams are all ``http`` (local
models, a vLLM beside the appliance) loads no certificates at all.

It runs when :mod:`appliance.backends` is imported, before any module of the package
imports aiohttp; if aiohttp was imported earlier (a test, a tool), it changes nothing.
"""

from __future__ import annotations

import functools
import ssl
import sys


def import_aiohttp() -> None:
    """Import aiohttp with its import-time certificate loading skipped (once)."""
    if "aiohttp" in sys.modules:
        return
    ssl.SSLContext.set_default_verify_paths = _skipped  # type: ignore[method-assign]
    try:
        import aiohttp  # noqa: F401
    finally:
        del ssl.SSLContext.set_default_verify_paths  # the inherited method again


def _skipped(self: ssl.SSLContext) -> None:
    """Loads nothing: only aiohttp's import runs while this stands in."""


@functools.cache
def client_context() -> ssl.SSLContext:
    """The context of every ``https`` upstream connection: the system's CA certificates
    (or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``), host names checked, HTTP/1.1 offered, as
    aiohttp's own default would be."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
