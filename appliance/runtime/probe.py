"""``appliance health``: ask the running server, on its own port, whether it is ready.

For a container's HEALTHCHECK and other local probes: the server's address and scheme
come from the same config it serves, so a probe speaks HTTPS when ``server.tls`` is set.
It talks to this machine only (a wildcard bind is probed on loopback), so it does not
verify the server's certificate (issued for a public name, not for 127.0.0.1); with a
``ca_file`` it presents the server's own certificate as its client certificate, which the
server accepts when that certificate is signed by a CA of ``ca_file`` and allows client
authentication. The standard library's HTTP client: a probe runs often and should start
quickly.
"""

from __future__ import annotations

import http.client
import ssl

from appliance.config import ApplianceConfig


def probe_host(host: str) -> str:
    """Where a probe on this machine reaches a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host.strip("[]")


def client_context(config: ApplianceConfig) -> ssl.SSLContext | None:
    """The probe's TLS context (None: plain HTTP)."""
    tls = config.server.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # this machine's own server, reached by address
    context.verify_mode = ssl.CERT_NONE
    if tls.ca_file is not None:
        # A password callable: never a prompt on the terminal (the key is unencrypted).
        context.load_cert_chain(tls.cert_file, tls.key_file, lambda: "")
    return context


def readiness(config: ApplianceConfig, timeout_s: float) -> tuple[bool, str]:
    """Whether the server serving ``config`` answers ``/readyz`` with 200, and a line
    saying what was seen."""
    host, port = probe_host(config.server.host), config.server.port
    scheme = "http" if config.server.tls is None else "https"
    url = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/readyz"
    try:
        context = client_context(config)
    except OSError as exc:  # ssl.SSLError too
        return False, f"{url}: the client certificate (cert_file, key_file) does not load: {exc}"
    connection: http.client.HTTPConnection
    if context is None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    else:
        connection = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=context)
    try:
        connection.request("GET", "/readyz", headers={"Connection": "close"})
        status = connection.getresponse().status
    except ssl.SSLError as exc:
        hint = ""
        if config.server.tls is not None and config.server.tls.ca_file is not None:
            hint = (
                "; the probe presents cert_file as its client certificate: a CA of ca_file "
                "must have signed it, for client authentication too"
            )
        return False, f"{url}: TLS handshake failed ({exc.reason or exc}){hint}"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{url}: {type(exc).__name__}: {exc}"
    finally:
        connection.close()
    if status == 200:
        return True, f"{url}: ready"
    return False, f"{url}: not ready (HTTP {status})"
