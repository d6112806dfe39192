"""``appliance check`` (and serve, and reload) refuse TLS files that would not serve.

Each problem names the YAML key, its line, the file and what is wrong with it: no
traceback, exit status 2 as for any other invalid configuration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from appliance.cli import main
from appliance.config.tls import TlsConfig, tls_problems
from tests.support.pki import Pki
from tests.support.server import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def check(tmp_path: Path, tls: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``appliance check`` on a config with this ``server.tls``; what it printed."""
    path = tmp_path / "c.yaml"
    models = [{"name": "m", "backend": "scripted"}]
    path.write_text(yaml.safe_dump({"server": {"tls": tls}, "models": models}, sort_keys=False))
    status = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return f"{status}\n{out}{err}"


def test_a_good_pair_passes_and_says_https(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    said = check(tmp_path, pki.tls_section(), capsys)
    assert said.startswith("0\n") and "listen: https://127.0.0.1:8000" in said
    said = check(tmp_path, pki.tls_section(client_certificates=True), capsys)
    assert said.startswith("0\n") and "(client certificates required)" in said


def test_a_key_from_another_certificate_is_a_mismatch(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Pki.make(tmp_path / "other")
    said = check(tmp_path, {**pki.tls_section(), "key_file": str(other.key_file)}, capsys)
    assert said.startswith("2\n")
    assert (
        f"server.tls.key_file (line 4): {other.key_file}: the private key does not match "
        f"the certificate in {pki.cert_file}"
    ) in said


def test_missing_folder_and_non_pem_files_are_named(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a certificate\n")
    tls = {
        "cert_file": str(tmp_path / "gone.pem"),
        "key_file": str(tmp_path),
        "ca_file": str(notes),
    }
    said = check(tmp_path, tls, capsys)
    assert said.startswith("2\n")
    assert f"server.tls.cert_file (line 3): {tmp_path / 'gone.pem'}: no such file" in said
    assert f"server.tls.key_file (line 4): {tmp_path}: is a folder, not a file" in said
    assert (
        f"server.tls.ca_file (line 5): {notes}: not a PEM CA certificate "
        "(no `-----BEGIN CERTIFICATE-----` block)"
    ) in said
    # The key where the certificate belongs, and the reverse.
    swapped = {"cert_file": str(pki.key_file), "key_file": str(pki.cert_file)}
    said = check(tmp_path, swapped, capsys)
    assert f"{pki.key_file}: not a PEM certificate" in said
    assert f"{pki.cert_file}: not a PEM private key" in said


def test_a_pem_block_that_does_not_decode_is_named(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken-ca.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    said = check(tmp_path, {**pki.tls_section(), "ca_file": str(broken)}, capsys)
    assert said.startswith("2\n")
    assert f"server.tls.ca_file (line 5): {broken}: the CA certificates do not load" in said


def problems_as_nobody(tls: dict[str, str]) -> str:
    """The TLS problems as an unprivileged user sees them (root reads any file): checked
    in a forked child that drops to ``nobody`` (no new interpreter to start)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            said = "\n".join(str(p) for p in tls_problems(TlsConfig.model_validate(tls)))
            os.write(write, said.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


def test_an_unreadable_key_is_named(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked.pem"
    locked.write_bytes(pki.key_file.read_bytes())
    locked.chmod(0)
    tls = {**pki.tls_section(), "key_file": str(locked)}
    said = problems_as_nobody(tls) if os.geteuid() == 0 else check(tmp_path, tls, capsys)
    assert f"{locked}: not readable by this user (permission denied)" in said


def test_serve_refuses_the_same_files_before_it_starts(tmp_path: Path, pki: Pki) -> None:
    other = Pki.make(tmp_path / "other")
    path = tmp_path / "c.yaml"
    tls = {**pki.tls_section(), "key_file": str(other.key_file)}
    models = [{"name": "m", "backend": "scripted"}]
    path.write_text(yaml.safe_dump({"server": {"tls": tls}, "models": models}, sort_keys=False))
    argv = [sys.executable, "-m", "appliance", "serve", "-c", str(path), "--port", str(free_port())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "the private key does not match the certificate" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_encrypted_key_is_refused_with_how_to_decrypt_it(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    """Granian 2.8 cannot read a password-protected key (its Rust side panics at start):
    said before anything starts, with the command that fixes it."""
    key = serialization.load_pem_private_key(pki.key_file.read_bytes(), None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"a password"),
        )
    )
    said = check(tmp_path, {**pki.tls_section(), "key_file": str(encrypted)}, capsys)
    assert said.startswith("2\n")
    assert f"server.tls.key_file (line 4): {encrypted}: the key is encrypted" in said
    assert f"openssl pkey -in {encrypted} -out key.pem" in said


def test_an_unquoted_version_is_the_version_it_names(pki: Pki) -> None:
    # YAML reads `min_version: 1.3` as a number; it names TLS 1.3 all the same.
    files = f"cert_file: {pki.cert_file}\nkey_file: {pki.key_file}\n"
    for written, version in (("1.3", "1.3"), ("1.2", "1.2"), ("'1.3'", "1.3")):
        section = yaml.safe_load(f"{files}min_version: {written}\n")
        assert TlsConfig.model_validate(section).min_version == version
    with pytest.raises(ValueError, match="min_version"):
        TlsConfig.model_validate(yaml.safe_load(f"{files}min_version: 1.1\n"))


def test_reload_finds_the_pid_file_of_the_port_serve_was_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "m", "backend": "scripted"}]}))
    port = free_port()
    status = main(["reload", "-c", str(path), "--port", str(port)])
    said = capsys.readouterr().err
    # No server runs: what matters is the PID file it looked for (the port's, not 8000's).
    assert status == 1 and f"appliance-{port}.pid" in said, said
