"""A request for an on-demand local model whose load fails reached no model: no ledger
row, no cost, no tokens off the key's ``tpm`` or budget (real server, a corrupt GGUF).

A stream that waits for the load takes the opening path (its 200 is sent at once, with
pings while the load runs, then the load's error as an event); later ones, and plain
requests, are refused 503 from the failure on record. Either way the request is 503 in
the access line and is not charged.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.local.models import ASK, corrupt_gguf, smollm2
from tests.support.poll import settled, until
from tests.support.server import RunningServer, ledger_rows

ADMIN = "load-failure-admin"
PRICED = {"pricing": {"input_per_mtok": 1e6, "output_per_mtok": 1e6}}  # 1 a token


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "usage.sqlite"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer],
    tmp_path_factory: pytest.TempPathFactory,
    ledger: Path,
) -> RunningServer:
    broken = corrupt_gguf(tmp_path_factory.mktemp("models"))
    # One estimated charge of the prompt (or the 100 tokens the issue saw) would leave
    # this key without room: tpm 40 and a budget of 40 at a token apiece.
    key = {"name": "tight", "key": "k-tight", "tpm": 40, "budget": {"amount": 40}}
    config = cluster_config(
        smollm2("broken", model={"path": broken}, load="on_demand", queue_timeout_s=120, **PRICED),
        scripted("echo", ["ok"], **PRICED),
        auth={"api_keys": [key], "window_s": 600},
        server={"admin_key": ADMIN},
        state={"usage_path": str(ledger)},
    )
    return start_server(config)


def post(server: RunningServer, model: str, rid: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": model, "messages": ASK, **extra},
        headers={"Authorization": "Bearer k-tight", "x-request-id": rid},
        timeout=120,
    )


def rows(ledger: Path, rid: str) -> list[tuple[Any, ...]]:
    return ledger_rows(ledger, "SELECT status, cost FROM requests WHERE request_id = ?", rid)


def test_requests_for_a_model_whose_load_failed_are_not_charged(
    server: RunningServer, ledger: Path
) -> None:
    refused = {
        "broken-stream-1": post(server, "broken", "broken-stream-1", stream=True),
        "broken-stream-2": post(server, "broken", "broken-stream-2", stream=True),
        "broken-plain": post(server, "broken", "broken-plain"),
        "broken-stream-3": post(server, "broken", "broken-stream-3", stream=True),
    }
    for rid, response in refused.items():
        if response.status_code == 200:  # a stream began (pings while it waited)
            assert "stream" in rid, response.text
            events = sse_payloads(response.text)
            assert events[-1] == "[DONE]"
            assert events[0]["error"]["code"] == "model_load_failed", events
        else:
            assert response.status_code == 503, (rid, response.text)
            assert response.json()["error"]["code"] == "model_load_failed"

    # The key has all its room: a tpm of 40 and a budget of 40 (4 estimated prompts
    # would be far more), so the scripted model still answers it, three times.
    served = [f"echo-{n}" for n in range(3)]
    for rid in served:
        assert post(server, "echo", rid).status_code == 200
    for rid in served:  # written in order: the refused requests' rows would be there by now
        until(partial(rows, ledger, rid), what=f"the row of {rid}")
    for rid in refused:
        assert rows(ledger, rid) == [], rid
    assert server.metric("appliance_cost_total", ADMIN, model="broken") == 0
    echo_cost = sum(rows(ledger, rid)[0][1] for rid in served)
    spent = settled(lambda: server.metric("appliance_cost_total", ADMIN, key="tight"))
    assert spent == pytest.approx(echo_cost)
    budgets = {b["key"]: b for b in server.status(ADMIN)["budgets"]}
    assert budgets["tight"]["spent"] == pytest.approx(echo_cost, abs=1e-6)
    tokens = server.metric("appliance_tokens_total", ADMIN, model="broken")
    assert tokens == 0
    for rid in refused:
        lines = server.events("request", request_id=rid)
        assert [line["status"] for line in lines] == [503], lines
