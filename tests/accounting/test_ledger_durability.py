"""The ledger and the spend it holds outlive restarts, reloads and SIGTERM under load.

Scripted model ``m`` answers ``["a", "b"]``: 2 completion tokens and, for the prompt
"hi", 1 prompt token; priced at one unit a token, each request costs 3. A budget of 8
admits three requests (spent 0, 3, 6) and refuses the fourth (9).
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import cluster_config, scripted
from tests.support.poll import until
from tests.support.server import RunningServer

PRICE = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}
MESSAGES = [{"role": "user", "content": "hi"}]


def config(usage_path: Path, amount: float = 8, **model: Any) -> dict[str, Any]:
    return cluster_config(
        scripted("m", ["a", "b"], pricing=PRICE, **model),
        auth={
            "api_keys": [
                {"name": "team", "key": "k-team", "budget": {"amount": amount, "period": "month"}},
                {"name": "load", "key": "k-load"},
            ]
        },
        state={"usage_path": str(usage_path)},
    )


def ask(server: RunningServer, key: str = "k-team") -> int:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "m", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    ).status_code


def rows(path: Path, where: str = "1") -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM requests WHERE {where}").fetchone()[0])


def test_spend_survives_a_restart(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    path = tmp_path / "usage.sqlite"
    first = start_server(config(path))
    assert [ask(first), ask(first)] == [200, 200]
    first.stop()
    assert rows(path) == 2, "SIGTERM wrote every buffered row"
    second = start_server(config(path))
    assert [ask(second), ask(second)] == [200, 429]
    second.stop()
    assert rows(path) == 3


def test_spend_survives_a_hot_reload(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    path = tmp_path / "usage.sqlite"
    server = start_server(config(path))
    assert [ask(server), ask(server)] == [200, 200]
    server.config_path.write_text(yaml.safe_dump(config(path, amount=8.5)))
    until(lambda: server.events("config_reloaded"), what="the reload of the new amount")
    assert [ask(server), ask(server)] == [200, 429]


async def _load(
    server: RunningServer, answered: list[int], stop: asyncio.Event, loaded: asyncio.Event
) -> None:
    """One client: plain and streamed requests until the server stops answering."""
    async with httpx.AsyncClient(timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            body = {"model": "m", "messages": MESSAGES, "stream": n % 2 == 0}
            try:
                reply = await client.post(
                    f"{server.base_url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": "Bearer k-load"},
                )
            except httpx.HTTPError:
                return  # the server has stopped listening
            complete = not body["stream"] or reply.text.rstrip().endswith("data: [DONE]")
            if reply.status_code == 200 and complete:
                answered.append(1)
                if len(answered) >= 100:
                    loaded.set()


def test_sigterm_under_load_loses_no_ledger_row(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    path = tmp_path / "usage.sqlite"
    server = start_server(config(path, options={"delay_ms": 20}))
    answered: list[int] = []

    async def run() -> None:
        stop, loaded = asyncio.Event(), asyncio.Event()
        clients = [asyncio.ensure_future(_load(server, answered, stop, loaded)) for _ in range(16)]
        await asyncio.wait_for(loaded.wait(), 60)  # under load now
        server.process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)  # deliberate: the load goes on through the shutdown a while
        stop.set()
        await asyncio.gather(*clients)

    asyncio.run(run())
    assert server.process.wait(20) == 0
    assert len(answered) >= 100, "the load ran"
    assert rows(path, "key = 'load' AND status = 200") == len(answered)
    assert rows(path) == len(answered)
