"""TLS to upstreams: certificates are loaded for ``https`` upstreams only, and verified."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from appliance.backends.openai import OpenAIWorker, Upstream
from appliance.backends.tls import client_context
from appliance.config import OpenAIModel
from appliance.errors import UpstreamConnectionError
from appliance.wire.openai.protocol import Endpoint
from tests.support.server import free_port

REPLY = b'{"object":"chat.completion","choices":[],"usage":null}'
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_importing_the_backends_loads_no_certificates(tmp_path: Path) -> None:
    """aiohttp's own default contexts (never used: see appliance.backends.tls) hold no
    certificates after the backends are imported, and the stand-in is gone again: a
    default context made afterwards loads the CA that ``SSL_CERT_FILE`` names."""
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    probe = (
        "import json, ssl; import appliance.backends.openai; import aiohttp.connector as c;"
        "print(json.dumps([c._SSL_CONTEXT_VERIFIED.cert_store_stats()['x509_ca'],"
        " ssl.create_default_context().cert_store_stats()['x509_ca']]))"
    )
    env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "ca.pem")}
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert json.loads(out.stdout) == [0, 1]


@pytest.fixture
def tls_upstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ssl.SSLContext]:
    """An upstream on https://127.0.0.1 with a certificate from a CA that
    ``SSL_CERT_FILE`` names (and that nothing else trusts)."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    client_context.cache_clear()
    yield server_context
    client_context.cache_clear()


async def serve(context: ssl.SSLContext) -> tuple[web.AppRunner, str]:
    async def chat(request: web.Request) -> web.Response:
        return web.Response(body=REPLY, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, f"https://127.0.0.1:{port}/v1"


def worker(base_url: str) -> OpenAIWorker:
    config = OpenAIModel(name="m", backend="openai", options={"base_url": base_url})
    return OpenAIWorker("m/0", config, Upstream(base_url=base_url, model="m"))


async def test_an_https_upstream_is_reached_with_its_certificate_verified(
    tls_upstream: ssl.SSLContext,
) -> None:
    runner, base_url = await serve(tls_upstream)
    w = worker(base_url)
    await w.start()
    try:
        assert await w.call(Endpoint.CHAT, CHAT) == REPLY
    finally:
        await w.close()
        await runner.cleanup()


async def test_an_https_upstream_whose_certificate_is_not_trusted_is_refused(
    tls_upstream: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "other.pem"))  # another CA
    runner, base_url = await serve(tls_upstream)
    w = worker(base_url)
    await w.start()
    try:
        with pytest.raises(UpstreamConnectionError, match="TLS handshake failed"):
            await w.call(Endpoint.CHAT, CHAT)
    finally:
        await w.close()
        await runner.cleanup()
