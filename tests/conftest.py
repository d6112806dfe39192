"""Shared fixtures: configs, the app in-process, the real server, a fake upstream."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from appliance.config import ApplianceConfig
from appliance.http.app import create_app
from appliance.serving.cluster import Cluster
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer

ConfigDict = dict[str, Any]


def scripted(name: str, reply: list[str] | None = None, **fields: Any) -> dict[str, Any]:
    """A scripted model entry."""
    options = fields.pop("options", {})
    if reply is not None:
        options["reply"] = reply
    return {"name": name, "backend": "scripted", "options": options, **fields}


def cluster_config(*models: dict[str, Any], **sections: Any) -> ConfigDict:
    """A config dict with the given models."""
    return {"models": list(models), **sections}


@pytest.fixture
def app_client() -> Callable[..., Any]:
    """``async with app_client(config_dict) as client``: the app in-process, workers started."""
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def open_client(
        config: ConfigDict, headers: dict[str, str] | None = None
    ) -> AsyncIterator[httpx.AsyncClient]:
        validated = ApplianceConfig.model_validate(copy.deepcopy(config))
        cluster = Cluster.from_config(validated)
        await cluster.start()
        app = create_app(validated, cluster=cluster)
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://appliance.test", headers=headers or {}
            ) as client:
                yield client
        finally:
            await cluster.close()

    return open_client


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    """One real OpenAI-compatible server for a test module (its ``server`` fixture points
    models at it; tests read what it received)."""
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A real OpenAI-compatible server on a loopback port."""
    upstream = FakeUpstream().start()
    try:
        yield upstream
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def start_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RunningServer]]:
    """``start_server(config_dict)``: the real appliance under Granian.

    Servers live until the end of the test module, so a module-scoped fixture can share one.
    """
    servers: list[RunningServer] = []

    def start(
        config: ConfigDict | Path, env: dict[str, str] | None = None, **options: Any
    ) -> RunningServer:
        folder = tmp_path_factory.mktemp("server")
        server = RunningServer(config, folder, env, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def sse_payloads(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded; ``[DONE]`` kept as a string."""
    out: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def joined_content(payloads: list[Any]) -> str:
    """The assistant text of a streamed chat reply."""
    return "".join(
        choice["delta"].get("content") or ""
        for p in payloads
        if isinstance(p, dict)
        for choice in p.get("choices", [])
    )
