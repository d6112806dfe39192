"""Budgets and the usage ledger on the real server, with the real fake upstream.

The fake upstream's chat replies use 5 prompt + 2 completion tokens and its streams 5 + 3.
At one currency unit a token (``1_000_000`` per million), a plain request costs 7 and a
stream 8: a key with a budget of 20 gets three requests (spent 0, then 7 or 8, then 14
or 16, all under 20) and is refused the fourth with ``insufficient_quota``.

The server is shared by the module, but each test uses keys of its own, so each passes
alone and in any order.
"""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import settled, until
from tests.support.server import RunningServer, ledger_rows

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PRICE = {"input_per_mtok": 1_000_000, "output_per_mtok": 1_000_000}
ADMIN = "admin-secret"


def config(upstream: FakeUpstream, usage_path: Path, **state: Any) -> dict[str, Any]:
    keys = [
        {"name": name, "key": f"k-{name}", "budget": {"amount": 20, "period": "day"}}
        for name in ("plain", "stream", "sdk", "spender", "cli")
    ]
    keys += [{"name": name, "key": f"k-{name}"} for name in ("rows", "totals", "left", "free")]
    return cluster_config(
        {
            "name": "priced",
            "backend": "openai",
            "options": {"base_url": upstream.base_url, "model": "ok"},
            "health": {"interval_s": 0},
            "pricing": PRICE,
        },
        {
            "name": "slow",
            "backend": "scripted",
            "pricing": PRICE,
            "options": {"reply": ["abcd"] * 40, "delay_ms": 100},
        },
        auth={"api_keys": keys},
        server={"admin_key": ADMIN},
        billing={"currency": "EUR"},
        state={"usage_path": str(usage_path), **state},
    )


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "usage.sqlite"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, ledger_path: Path
) -> RunningServer:
    return start_server(config(upstream, ledger_path))


def chat(server: RunningServer, key: str, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": "priced", "messages": MESSAGES, "stream": stream}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer k-{key}"},
        timeout=10,
    )


def usage(server: RunningServer, **params: str) -> httpx.Response:
    return httpx.get(
        f"{server.base_url}/admin/usage",
        params=params,
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )


def assert_quota_refusal(response: httpx.Response) -> None:
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "insufficient_quota"
    assert error["type"] == "insufficient_quota"
    assert "budget of 20 EUR per day is spent" in error["message"]
    assert re.search(r"resets at \d{4}-\d\d-\d\dT00:00:00Z", error["message"])
    assert response.headers["x-should-retry"] == "false"
    assert 0 < int(response.headers["retry-after"]) <= 86400


def test_plain_requests_are_refused_once_the_budget_is_spent(server: RunningServer) -> None:
    responses = [chat(server, "plain") for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert_quota_refusal(responses[3])


def test_streams_are_refused_once_the_budget_is_spent(server: RunningServer) -> None:
    responses = [chat(server, "stream", stream=True) for _ in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert all(sse_payloads(r.text)[-1] == "[DONE]" for r in responses[:3])
    assert_quota_refusal(responses[3])


def test_openai_client_gets_insufficient_quota_without_retrying(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="k-sdk", max_retries=2)
    for _ in range(3):
        client.chat.completions.create(model="priced", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="priced", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "insufficient_quota"
    refusals = settled(lambda: server.event_count("request", key_name="sdk", status=429))
    assert refusals == 1, "x-should-retry: false stops the SDK's retries (max_retries=2)"


def test_ledger_rows_hold_tokens_cost_status_and_latency(
    server: RunningServer, ledger_path: Path
) -> None:
    before = time.time()
    assert chat(server, "rows").status_code == 200
    assert chat(server, "rows", stream=True).status_code == 200
    query = (
        "SELECT key, model, route, input_tokens, output_tokens, cost, status, latency_ms,"
        " estimated, ts FROM requests WHERE key = 'rows' ORDER BY ts"
    )
    rows = until(  # the ledger writes every half second
        lambda: found if len(found := ledger_rows(ledger_path, query)) >= 2 else None,
        what="two ledger rows for the key",
    )
    assert [r[:7] for r in rows] == [
        ("rows", "priced", "/v1/chat/completions", 5, 2, 7.0, 200),
        ("rows", "priced", "/v1/chat/completions", 5, 3, 8.0, 200),
    ]
    assert all(r[7] > 0 and r[8] == 0 and before - 1 < r[9] < time.time() for r in rows)


def test_admin_usage_totals_by_day_key_and_model_in_json_and_csv(server: RunningServer) -> None:
    assert chat(server, "totals").status_code == 200
    assert chat(server, "totals").status_code == 200
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def totals() -> httpx.Response | None:
        reply = usage(server, key="totals", model="priced", **{"from": today, "to": today})
        assert reply.status_code == 200
        data = reply.json()["data"]
        return reply if data and data[0]["requests"] == 2 else None

    body = until(totals, what="both requests in /admin/usage").json()
    assert body["currency"] == "EUR"
    [row] = body["data"]
    assert row["day"] == today and row["key"] == "totals" and row["model"] == "priced"
    assert (row["input_tokens"], row["output_tokens"], row["cost"]) == (10, 4, 14)
    assert body["totals"]["requests"] == row["requests"]
    text = usage(server, key="totals", format="csv").text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["key"] == "totals" and float(parsed[0]["cost"]) == row["cost"]
    assert usage(server, key="nobody").json()["data"] == []
    assert usage(server, **{"to": "1990-01-01"}).json()["data"] == []


def test_admin_usage_needs_the_admin_key_and_valid_filters(server: RunningServer) -> None:
    url = f"{server.base_url}/admin/usage"
    refused = httpx.get(url, headers={"Authorization": "Bearer k-free"})
    assert refused.status_code == 401
    bad = usage(server, **{"from": "last tuesday"})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "from"
    assert usage(server, format="xml").status_code == 400


def test_cost_metric_and_status_page_show_spend_per_key(server: RunningServer) -> None:
    assert chat(server, "free").status_code == 200
    assert server.metric("appliance_cost_total", ADMIN, key="free", model="priced") >= 7
    assert [chat(server, "spender").status_code for _ in range(3)] == [200, 200, 200]
    budgets = {b["key"]: b for b in server.status(ADMIN)["budgets"]}
    assert budgets["spender"]["amount"] == 20 and budgets["spender"]["period"] == "day"
    assert budgets["spender"]["spent"] == 21.0  # three plain requests of 7
    assert "free" not in budgets


def test_stream_left_early_is_charged_for_what_was_sent(
    server: RunningServer, ledger_path: Path
) -> None:
    body = {"model": "slow", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": "Bearer k-left", "x-request-id": "left-early"}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: ") and "abcd" in line:
                seen += 1
                if seen == 3:
                    break
    query = "SELECT output_tokens, cost, status, estimated FROM requests WHERE request_id = ?"
    [(output, cost, status, estimated)] = until(
        lambda: ledger_rows(ledger_path, query, "left-early"), what="the left stream's row"
    )
    assert status == 499 and estimated == 1
    assert 3 <= output <= 6, "charged the chunks relayed (4 characters each), not all 40"
    assert cost > output  # the prompt is charged too


def test_cli_prints_the_same_totals_from_the_file(server: RunningServer, ledger_path: Path) -> None:
    assert [chat(server, "cli").status_code for _ in range(2)] == [200, 200]
    query = "SELECT count(*) FROM requests WHERE key = 'cli'"
    until(lambda: ledger_rows(ledger_path, query) == [(2,)], what="both rows in the file")
    api = usage(server, key="cli").json()["data"]
    assert api[0]["requests"] == 2
    out = subprocess.run(
        [sys.executable, "-m", "appliance", "usage", "-f", str(ledger_path), "--key", "cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["day", "key", "model"]
    assert lines[1].split()[1:4] == ["cli", "priced", str(api[0]["requests"])]
    assert lines[-1].startswith("total")
    bad = subprocess.run(
        [sys.executable, "-m", "appliance", "usage", "-f", str(ledger_path), "--from", "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "'from' must be a date" in bad.stderr


def test_a_stream_that_breaks_is_recorded_with_its_error_status(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, tmp_path: Path
) -> None:
    path = tmp_path / "usage.sqlite"
    breaks = {
        "name": "breaks",
        "backend": "openai",
        "retries": 0,
        "options": {"base_url": upstream.base_url, "model": "break-mid-stream"},
        "health": {"interval_s": 0},
    }
    served = start_server(cluster_config(breaks, state={"usage_path": str(path)}))
    body = {"model": "breaks", "messages": MESSAGES, "stream": True}
    headers = {"x-request-id": "breaks-mid-stream"}
    with httpx.stream(
        "POST", f"{served.base_url}/v1/chat/completions", json=body, headers=headers, timeout=10
    ) as response:
        lines = list(response.iter_lines())
    assert response.status_code == 200  # the stream had begun
    assert any("upstream_unreachable" in line for line in lines)
    query = "SELECT status FROM requests WHERE request_id = 'breaks-mid-stream'"
    rows = until(lambda: ledger_rows(path, query), what="the broken stream's row")
    assert rows == [(502,)]
