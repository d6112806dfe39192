"""A throwaway certificate authority (trustme) and the PEM files a TLS test needs."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""

    folder: Path
    ca: trustme.CA

    @classmethod
    def make(cls, folder: Path) -> Pki:
        folder.mkdir(parents=True, exist_ok=True)
        pki = cls(folder, trustme.CA())
        pki.ca.cert_pem.write_to_path(str(pki.ca_file))
        pki.issue_server(pki.cert_file, pki.key_file)
        client = pki.ca.issue_cert("client@appliance.test")
        client.private_key_and_cert_chain_pem.write_to_path(str(folder / "client.pem"))
        return pki

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert_file(self) -> Path:
        return self.folder / "cert.pem"

    @property
    def key_file(self) -> Path:
        return self.folder / "key.pem"

    def issue_server(
        self, cert_file: Path, key_file: Path, not_after: datetime.datetime | None = None
    ) -> None:
        """A new server certificate (and key) for 127.0.0.1, chain first-to-last; valid
        until ``not_after`` (trustme's default: far away)."""
        issued = self.ca.issue_cert("127.0.0.1", "localhost", not_after=not_after)
        cert_file.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
        issued.private_key_pem.write_to_path(str(key_file))

    def tls_section(self, client_certificates: bool = False) -> dict[str, str]:
        """``server.tls`` serving this server certificate (asking for client ones)."""
        section = {"cert_file": str(self.cert_file), "key_file": str(self.key_file)}
        if client_certificates:
            section["ca_file"] = str(self.ca_file)
        return section

    def client_context(self, with_certificate: bool = False) -> ssl.SSLContext:
        """A client context that verifies the server against this CA (only)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if with_certificate:
            context.load_cert_chain(str(self.folder / "client.pem"))
        return context
