"""``appliance health`` and the image's HEALTHCHECK, against real servers: plain HTTP,
HTTPS, and HTTPS that requires client certificates.

The HEALTHCHECK is read from the Containerfile and run as it is, with only the binary's
path and the port put in: bash's plain-HTTP probe first, ``appliance health`` after it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.cli import main
from tests.conftest import cluster_config, scripted
from tests.support.pki import Pki
from tests.support.server import RunningServer, free_port

ROOT = Path(__file__).resolve().parents[2]


def healthcheck(tmp_path: Path, port: int, config: Path) -> subprocess.CompletedProcess[str]:
    """The Containerfile's HEALTHCHECK command, run here against ``port``."""
    lines = (ROOT / "Containerfile").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("HEALTHCHECK "))
    command: list[str] = json.loads(lines[at + 1].strip().removeprefix("CMD "))
    shim = tmp_path / "appliance"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m appliance "$@"\n')
    shim.chmod(0o755)
    command = [
        part.replace("/dev/tcp/127.0.0.1/8000", f"/dev/tcp/127.0.0.1/{port}").replace(
            "/app/lib/appliance", str(shim)
        )
        for part in command
    ]
    env = {**os.environ, "APPLIANCE_CONFIG": str(config), "APPLIANCE_PORT": str(port)}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize("tls", ["none", "https", "client certificates"])
def test_the_image_healthcheck_passes_with_and_without_tls(
    start_server: Callable[..., RunningServer], pki: Pki, tmp_path: Path, tls: str
) -> None:
    config = cluster_config(scripted("m", ["ok"]))
    options: dict[str, object] = {}
    if tls != "none":
        mutual = tls == "client certificates"
        config["server"] = {"tls": pki.tls_section(client_certificates=mutual)}
        options["tls"] = pki.client_context(with_certificate=mutual)
    server = start_server(config, **options)
    done = healthcheck(tmp_path, server.port, server.config_path)
    assert done.returncode == 0, done.stderr
    scheme = "http" if tls == "none" else "https"
    if tls == "none":
        assert done.stdout == ""  # bash's probe answered; the appliance was not started
    else:
        assert done.stdout.strip() == f"{scheme}://127.0.0.1:{server.port}/readyz: ready"


def test_the_healthcheck_fails_when_nothing_listens(tmp_path: Path, pki: Pki) -> None:
    config = tmp_path / "c.yaml"
    models = [{"name": "m", "backend": "scripted"}]
    config.write_text(json.dumps({"server": {"tls": pki.tls_section()}, "models": models}))
    port = free_port()
    done = healthcheck(tmp_path, port, config)
    assert done.returncode == 1
    assert f"https://127.0.0.1:{port}/readyz: ConnectionRefusedError" in done.stderr


def test_health_says_why_a_client_certificate_is_refused(
    start_server: Callable[..., RunningServer],
    pki: Pki,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The probe presents the server's own certificate where client certificates are
    required: one the CA in ca_file did not sign is refused, and the probe says how."""
    stranger = Pki.make(tmp_path / "stranger")
    section = {**stranger.tls_section(), "ca_file": str(pki.ca_file)}
    client = stranger.client_context()
    client.load_cert_chain(str(pki.folder / "client.pem"))
    server = start_server(cluster_config(scripted("m"), server={"tls": section}), tls=client)
    assert main(["health", "-c", str(server.config_path), "--port", str(server.port)]) == 1
    err = capsys.readouterr().err
    assert f"https://127.0.0.1:{server.port}/readyz: TLS handshake failed" in err
