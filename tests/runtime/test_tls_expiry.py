"""The served certificate's expiry on /metrics, for alerting before it runs out."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from appliance.cli import main
from appliance.runtime.certificate import EXPIRY, not_after
from appliance.runtime.server import default_pid_file
from tests.conftest import cluster_config, scripted
from tests.runtime.test_tls import served_certificate, tls_config
from tests.support.pki import Pki
from tests.support.poll import until
from tests.support.server import RunningServer

UTC = dt.UTC


def expiry_samples(server: RunningServer) -> list[float]:
    """The values of the expiry gauge on /metrics, and that its help says when it changes."""
    found = [
        family
        for family in text_string_to_metric_families(server.metrics_text())
        if family.name == EXPIRY
    ]
    for family in found:
        assert family.type == "gauge" and "after a restart" in family.documentation
    return [sample.value for family in found for sample in family.samples]


def expiry_of(der: bytes) -> float:
    """The served certificate's notAfter, as cryptography reads it."""
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


@pytest.mark.parametrize(
    "when",
    [
        dt.datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime, 19xx
        dt.datetime(2031, 5, 6, 12, 34, 56, tzinfo=UTC),  # UTCTime, 20xx
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=UTC),  # UTCTime's last year
        dt.datetime(2050, 1, 1, tzinfo=UTC),  # GeneralizedTime from here on
        dt.datetime(3000, 1, 1, tzinfo=UTC),
    ],
)
def test_not_after_reads_the_first_certificate_as_cryptography_does(when: dt.datetime) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert(
        "127.0.0.1", not_before=dt.datetime(1990, 1, 1, tzinfo=UTC), not_after=when
    )
    pem = b"".join(p.bytes() for p in leaf.cert_chain_pems) + ca.cert_pem.bytes()
    reference = x509.load_pem_x509_certificate(pem).not_valid_after_utc  # the first one
    assert not_after(pem) == when.timestamp() == reference.timestamp()


def test_not_after_refuses_what_is_no_certificate() -> None:
    with pytest.raises(ValueError, match="no PEM certificate"):
        not_after(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="does not decode"):
        not_after(b"-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n")


def test_metrics_say_when_the_served_certificate_expires_across_processes(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Each process sets it; a scrape shows one value, the served certificate's."""
    pki = Pki.make(tmp_path / "pki")
    when = dt.datetime(2031, 5, 6, 12, 34, 56, tzinfo=UTC)
    pki.issue_server(pki.cert_file, pki.key_file, not_after=when)
    server = start_server(tls_config(pki.tls_section(), processes=2), tls=pki.client_context())
    assert expiry_samples(server) == [when.timestamp()]
    assert expiry_of(served_certificate(server.port, pki.client_context())) == when.timestamp()


def test_a_renewal_on_disk_shows_after_a_restart_not_on_reload(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Granian serves the certificate it read at start until a restart: so does the gauge,
    whatever the file on disk holds now (the alert must go on firing)."""
    pki = Pki.make(tmp_path / "pki")
    first = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    pki.issue_server(pki.cert_file, pki.key_file, not_after=first)
    server = start_server(
        tls_config(pki.tls_section(), watch_config=False), tls=pki.client_context()
    )
    assert expiry_samples(server) == [first.timestamp()]

    pki.issue_server(pki.cert_file, pki.key_file, not_after=first.replace(year=2031))  # renewed
    pid_file = default_pid_file(server.port)
    assert main(["reload", "-c", str(server.config_path), "--pid-file", str(pid_file)]) == 0
    until(lambda: server.events("restart_needed"), what="restart_needed after the reload")
    assert expiry_samples(server) == [first.timestamp()]
    assert expiry_of(served_certificate(server.port, pki.client_context())) == first.timestamp()

    server.stop()  # a restart: the new certificate is served, and shown
    renewed = first.replace(year=2031).timestamp()
    again = start_server(server.config_path, tls=pki.client_context())
    assert expiry_samples(again) == [renewed]
    assert expiry_of(served_certificate(again.port, pki.client_context())) == renewed


def test_no_tls_no_expiry_series(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(cluster_config(scripted("m", ["plain"])))
    assert expiry_samples(server) == []
