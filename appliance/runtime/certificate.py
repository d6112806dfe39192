"""The served certificate's expiry as a gauge, for alerting before it runs out.

``appliance_tls_certificate_expiry_timestamp_seconds`` is the ``notAfter`` of the first
certificate in ``server.tls.cert_file`` (the server's own; its intermediates follow it) as
a Unix time, as blackbox_exporter's ``probe_ssl_earliest_cert_expiry`` and the
certificate exporters have it: alert on ``... - time() < 14 * 86400``. Granian reads the
certificate when a serving process starts and serves it for the process's life, so the
gauge is set when the app is built, from the file as it is then, and a renewed file shows
after a restart (a reload says ``restart_needed``). With several processes each sets its
own and a scrape shows the earliest of the live ones. Without ``server.tls`` there is no
such series.

The date is read from the certificate's DER with the standard library: the ``ssl``
module decodes the PEM, and the few steps of ASN.1 down to ``notAfter`` are walked here.
"""

from __future__ import annotations

import datetime as dt
import re
import ssl

import structlog
from prometheus_client import Gauge

from appliance.config.tls import TlsConfig
from appliance.runtime.metrics import Metrics

log = structlog.get_logger("appliance.tls")

EXPIRY = "appliance_tls_certificate_expiry_timestamp_seconds"
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)
_UTC_TIME, _GENERALIZED_TIME, _VERSION = 0x17, 0x18, 0xA0


def export_expiry(metrics: Metrics, tls: TlsConfig | None) -> Gauge | None:
    """Set the gauge from ``tls.cert_file`` as it is now (nothing without TLS, or when the
    file no longer reads as a certificate: that is logged)."""
    if tls is None:
        return None
    try:
        expires = not_after(tls.cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        log.warning("tls_certificate_unreadable", file=str(tls.cert_file), error=str(exc))
        return None
    gauge = Gauge(
        EXPIRY,
        "When the certificate served over TLS (server.tls.cert_file, the first one in it) "
        "expires, as a Unix time. Read when a serving process starts; a renewed "
        "certificate is served, and shown here, after a restart.",
        multiprocess_mode="livemin",
        registry=None if metrics.multiprocess else metrics.registry,
    )
    gauge.set(expires)
    return gauge


def not_after(pem: bytes) -> float:
    """The ``notAfter`` of the first PEM certificate in ``pem``, as a Unix time.

    Raises:
        ValueError: No PEM certificate, or not one that decodes as X.509.
    """
    found = _PEM.search(pem)
    if found is None:
        raise ValueError("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file")
    try:
        der = ssl.PEM_cert_to_DER_cert(found.group().decode("ascii"))
        return _not_after(der)
    except (IndexError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the certificate does not decode ({exc})") from exc


def _not_after(der: bytes) -> float:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    serialNumber, signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... } ... }
    (RFC 5280, 4.1)."""
    _, certificate, _ = _element(der, 0)
    _, at, _ = _element(der, certificate)  # into tbsCertificate
    tag, _, end = _element(der, at)
    if tag == _VERSION:
        at = end
    for _ in ("serialNumber", "signature", "issuer"):
        at = _element(der, at)[2]
    _, validity, _ = _element(der, at)
    tag, start, end = _element(der, _element(der, validity)[2])  # past notBefore
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ: 50 to 99 are 1950 to 1999 (RFC 5280, 4.1.2.5.1)
        text = ("19" if int(text[:2]) >= 50 else "20") + text
    elif tag != _GENERALIZED_TIME:
        raise ValueError(f"notAfter is not a time (tag {tag:#x})")
    when = dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.UTC)
    return when.timestamp()


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """``(tag, start, end)`` of the DER element at ``at``: its value is ``der[start:end]``."""
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:  # long form: the next (length & 0x7f) bytes hold the length
        size = length & 0x7F
        length = int.from_bytes(der[start : start + size], "big")
        start += size
    if start + length > len(der):
        raise ValueError("a DER element runs past the end")
    return tag, start, start + length
