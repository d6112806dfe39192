"""HTTPS served by Granian itself (``server.tls``), end to end on a loopback port.

The real server, the real ``openai`` SDK verifying the server's certificate against a
throwaway CA, client certificates, plain HTTP sent to the TLS port, and a certificate
replaced on disk.
"""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import openai
import pytest

from appliance.cli import main
from appliance.runtime.server import default_pid_file
from tests.conftest import cluster_config, scripted
from tests.docs import readme
from tests.support.pki import Pki
from tests.support.poll import until
from tests.support.server import RunningServer

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello"}
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.make(tmp_path_factory.mktemp("pki"))


def tls_config(section: dict[str, str], **server: object) -> dict[str, object]:
    return cluster_config(scripted("m", ["served over tls"]), server={"tls": section, **server})


@pytest.fixture(scope="module")
def https(start_server: Callable[..., RunningServer], pki: Pki) -> RunningServer:
    return start_server(tls_config(pki.tls_section()), tls=pki.client_context())


def sdk(server: RunningServer, context: ssl.SSLContext | None) -> openai.OpenAI:
    verify: ssl.SSLContext | bool = context if context is not None else True
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.Client(verify=verify, timeout=30),
    )


def quiet_log(server: RunningServer) -> None:
    """Nothing went wrong inside the server: no traceback, no panic, no error line."""
    log = server.log()
    assert "Traceback" not in log and "panicked" not in log
    assert '"level":"error"' not in log and '"level":"critical"' not in log


def test_openai_sdk_over_https_verifies_the_certificate(https: RunningServer, pki: Pki) -> None:
    assert https.base_url.startswith("https://127.0.0.1:")
    client = sdk(https, pki.client_context())
    reply = client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "served over tls"
    stream = client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "served over tls"
    # Verification is on: a client that does not trust the CA refuses the server.
    with pytest.raises(openai.APIConnectionError) as refused:
        sdk(https, None).chat.completions.create(model="m", messages=MESSAGES)
    assert isinstance(refused.value.__cause__, httpx.ConnectError)
    assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value.__cause__)
    quiet_log(https)


def test_plain_http_to_the_tls_port_is_refused_cleanly(https: RunningServer, pki: Pki) -> None:
    plain = https.base_url.replace("https://", "http://")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/healthz", timeout=10)
    # On the wire: a TLS alert record (content type 21), never an HTTP answer.
    with socket.create_connection(("127.0.0.1", https.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = sock.recv(64)
    assert not answer.startswith(b"HTTP/")
    assert answer == b"" or answer[0] == 21, answer
    # The server keeps serving, and said nothing alarming about it.
    assert httpx.get(f"{https.base_url}/healthz", verify=pki.client_context()).status_code == 200
    quiet_log(https)


def tls12_only(context: ssl.SSLContext) -> ssl.SSLContext:
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def test_tls_1_2_is_accepted_unless_min_version_says_1_3(
    https: RunningServer, start_server: Callable[..., RunningServer], pki: Pki
) -> None:
    """The default accepts TLS 1.2 clients (Granian's own default would refuse them)."""
    old_client = sdk(https, tls12_only(pki.client_context()))
    reply = old_client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "served over tls"
    section = {**pki.tls_section(), "min_version": "1.3"}
    strict = start_server(tls_config(section), tls=pki.client_context())
    with pytest.raises(openai.APIConnectionError):
        sdk(strict, tls12_only(pki.client_context())).chat.completions.create(
            model="m", messages=MESSAGES
        )
    reply = sdk(strict, pki.client_context()).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "served over tls"


def test_client_certificates_are_required_with_a_ca_file(
    start_server: Callable[..., RunningServer], pki: Pki
) -> None:
    section = pki.tls_section(client_certificates=True)
    server = start_server(tls_config(section), tls=pki.client_context(with_certificate=True))
    # Without a client certificate the handshake fails (with TLS 1.3 the client may only
    # learn it on its first read): no answer either way.
    with pytest.raises(openai.APIConnectionError):
        sdk(server, pki.client_context()).chat.completions.create(model="m", messages=MESSAGES)
    # A certificate from another CA is refused too.
    stranger = Pki.make(pki.folder / "stranger")
    context = pki.client_context()
    context.load_cert_chain(str(stranger.folder / "client.pem"))
    with pytest.raises(openai.APIConnectionError):
        sdk(server, context).chat.completions.create(model="m", messages=MESSAGES)
    with_certificate = sdk(server, pki.client_context(with_certificate=True))
    reply = with_certificate.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "served over tls"
    quiet_log(server)


def test_tls_with_several_processes(start_server: Callable[..., RunningServer], pki: Pki) -> None:
    server = start_server(tls_config(pki.tls_section(), processes=2), tls=pki.client_context())
    client = sdk(server, pki.client_context())
    for _ in range(4):
        reply = client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "served over tls"
    quiet_log(server)


def served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_a_replaced_certificate_says_restart_needed_on_reload(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """Granian reads the certificate when it starts and keeps it: a reload cannot swap it,
    so it says ``restart_needed`` naming the replaced files, and goes on serving."""
    pki = Pki.make(tmp_path / "pki")
    config = tls_config(pki.tls_section(), watch_config=False)  # only the reload says it
    server = start_server(config, tls=pki.client_context())
    before = served_certificate(server.port, pki.client_context())
    pki.issue_server(pki.cert_file, pki.key_file)  # a renewal: both files replaced

    # `appliance reload` validates the config, TLS files included, then signals.
    pid_file = default_pid_file(server.port)
    assert main(["reload", "-c", str(server.config_path), "--pid-file", str(pid_file)]) == 0
    [needed] = until(
        lambda: server.events("restart_needed"), what="restart_needed after the reload"
    )
    assert needed["settings"] == ["server.tls.cert_file", "server.tls.key_file"]
    assert server.event_count("config_reloaded", reason="sighup") == 1
    assert needed["reason"] == "sighup"  # what set the reload off, as config_reloaded says
    # Still serving, with the certificate it started with (both are signed by the CA).
    assert served_certificate(server.port, pki.client_context()) == before
    reply = sdk(server, pki.client_context()).chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == "served over tls"
    quiet_log(server)


def test_a_renewal_on_disk_says_restart_needed_without_a_reload(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    """The TLS files are watched with the config: a renewal (here the CA file too) is
    told at once, naming what was replaced."""
    pki = Pki.make(tmp_path / "pki")
    section = pki.tls_section(client_certificates=True)
    server = start_server(tls_config(section), tls=pki.client_context(with_certificate=True))
    pki.ca_file.write_bytes(pki.ca_file.read_bytes() + b"\n")
    [first] = until(lambda: server.events("restart_needed"), what="restart_needed for the CA")
    assert first["settings"] == ["server.tls.ca_file"]
    assert first["reason"] == "tls_files_changed"
    pki.issue_server(pki.cert_file, pki.key_file)
    every = ["server.tls.cert_file", "server.tls.key_file", "server.tls.ca_file"]
    until(
        lambda: server.events("restart_needed"),
        accept=lambda events: events[-1]["settings"] == every,
        what="restart_needed naming the certificate and key too",
    )
    assert server.event_count("config_reloaded") == 0
    assert served_certificate(server.port, pki.client_context(with_certificate=True))
    quiet_log(server)


def test_the_readme_tls_section_runs_as_written(
    start_server: Callable[..., RunningServer],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its openssl line makes the files its config names; check passes; its curl and SDK
    examples get an answer over verified HTTPS; its alert's metric is on /metrics."""
    config, make, curl, python, rule = [b for b in readme.blocks() if b.section == "TLS"]
    assert [b.language for b in (config, make, curl, python, rule)] == [
        "yaml",
        "sh",
        "sh",
        "python",
        "",
    ]
    subprocess.run(["bash", "-euo", "pipefail", "-c", make.text], cwd=tmp_path, check=True)
    path = tmp_path / "cluster.yaml"
    path.write_text(config.text)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-c", str(path)]) == 0
    assert "listen: https://127.0.0.1:8443" in capsys.readouterr().out
    context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    server = start_server(path, tls=context, cwd=tmp_path)
    for argv in (
        ["bash", "-euo", "pipefail", "-c", curl.text.replace("curl ", "curl --fail ")],
        [sys.executable, "-c", python.text],
    ):
        argv[-1] = argv[-1].replace("127.0.0.1:8443", f"127.0.0.1:{server.port}")
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "echo" in done.stdout
    # The alert's expression: the certificate openssl made for 30 days has 30 days left.
    [metric] = re.findall(r"appliance_\w+", rule.text)
    left_days = (server.metric(metric) - time.time()) / 86_400
    assert 29 < left_days <= 30
