"""Mixed load, then SIGTERM: every request settles exactly once (the real server).

80 requests, plain and streamed, each with its own ``x-request-id`` (also written into
its prompt, so the fake upstream's record says which ones reached a model): some to a
model whose upstream fails, some to an unknown model, some whose clients hang up at
random points (a read timeout shorter than the reply, or a stream closed after a few
chunks). Once the server has settled, ``/metrics`` is scraped and the server gets
SIGTERM. Then:

- every request the upstream received (it reached a model) has exactly one ledger row,
  and no other request has one (so none that reached no model is charged);
- the rows' costs add up to ``appliance_cost_total``;
- the access log has exactly one ``request`` line per request id, with the row's status,
  and ``appliance_requests_total`` counts the same statuses as the access lines.

Run with one process and with two (whose metrics are summed over the processes).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import cluster_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import settled, until
from tests.support.server import RunningServer, ledger_rows, metric_in

ADMIN = "mixed-load-admin"
REQUESTS = 80
ROUTE = "/v1/chat/completions"


def upstream_model(name: str, served: str, fake: FakeUpstream) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "retries": 0,
        "options": {"base_url": fake.base_url, "model": served},
        "health": {"interval_s": 0},
        "pricing": {"input_per_mtok": 3.0, "output_per_mtok": 7.0},
    }


def plan(rng: random.Random, n: int, prefix: str) -> list[dict[str, Any]]:
    """What each request does: its model, whether it streams, and how its client ends."""
    out = []
    for i in range(n):
        rid = f"{prefix}-{i:03d}"
        model = rng.choices(["good", "bad", "breaks", "nope"], weights=[14, 3, 2, 1])[0]
        stream = rng.random() < 0.5
        body: dict[str, Any] = {
            "model": model,
            "messages": [{"role": "user", "content": f"request {rid} " + "x" * rng.randrange(80)}],
        }
        ending = "read"
        if stream:
            body.update(stream=True, x_chunks=rng.randrange(2, 10), x_chunk_delay_ms=30)
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
            if rng.random() < 0.3:
                ending = f"after:{rng.randrange(0, 3)}"  # close after this many chunks
        body["x_first_delay_ms"] = rng.choice([0, 0, 100, 400])
        if rng.random() < 0.2:
            ending = f"timeout:{rng.choice([0.05, 0.15, 0.3])}"
        out.append({"rid": rid, "body": body, "ending": ending})
    return out


def send(base_url: str, step: dict[str, Any]) -> str:
    """Run one request of the plan; what the client saw (a status, or how it left)."""
    headers = {"Authorization": "Bearer k-mixed", "x-request-id": step["rid"]}
    kind, _, arg = step["ending"].partition(":")
    timeout = httpx.Timeout(30, read=float(arg)) if kind == "timeout" else 30
    url = f"{base_url}{ROUTE}"
    try:
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("POST", url, json=step["body"], headers=headers) as response,
        ):
            if kind != "after":
                response.read()
                return str(response.status_code)
            seen = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    if seen >= int(arg):
                        return "left"
                    seen += 1
            return str(response.status_code)
    except httpx.TimeoutException:
        return "left"


def cost_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "appliance_cost_total"
    )


def statuses_counted(text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "appliance_requests_total" and sample.labels["route"] == ROUTE:
                counted[sample.labels["status"]] += int(sample.value)
    return counted


@pytest.mark.parametrize("processes", [1, 2])
def test_mixed_load_then_sigterm_settles_every_request_once(
    start_server: Callable[..., RunningServer],
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    processes: int,
) -> None:
    ledger = tmp_path / "usage.sqlite"
    config = cluster_config(
        upstream_model("good", "ok", fake_upstream),
        upstream_model("bad", "fail-500", fake_upstream),
        upstream_model("breaks", "error-mid-stream", fake_upstream),
        auth={"api_keys": [{"name": "mixed", "key": "k-mixed"}]},
        server={"admin_key": ADMIN, "processes": processes},
        state={"usage_path": str(ledger)},
    )
    server = start_server(config)
    steps = plan(random.Random(processes), REQUESTS, f"mix{processes}")
    with ThreadPoolExecutor(8) as pool:
        seen_by_client = dict(
            zip(
                [s["rid"] for s in steps],
                pool.map(lambda s: send(server.base_url, s), steps),
                strict=True,
            )
        )
    assert "left" in seen_by_client.values(), "some clients must have hung up"
    assert {"200", "404"} <= set(seen_by_client.values())

    sent = {s["rid"] for s in steps}

    def reached() -> set[str]:
        return {
            rid
            for seen in fake_upstream.requests
            for rid in sent
            if f"request {rid} " in str(seen.body.get("messages"))
        }

    def rows() -> list[tuple[Any, ...]]:
        return ledger_rows(ledger, "SELECT request_id, status, cost FROM requests")

    def quiet() -> tuple[int, int, float, int]:
        text = server.metrics_text(ADMIN)
        in_flight = metric_in(text, "appliance_in_flight_requests")
        lines = len([e for e in server.events("request") if e.get("request_id") in sent])
        return len(reached()), len(rows()), cost_total(text) + in_flight, lines

    until(
        lambda: (
            server.metric("appliance_in_flight_requests", ADMIN) == 0
            and len(rows()) >= len(reached())
        ),
        what="every request that reached a model finished and written",
    )
    settled(quiet, quiet_s=1.5, timeout=60)
    metrics = server.metrics_text(ADMIN)
    server.stop()  # SIGTERM
    assert server.process.returncode == 0, server.log()[-3000:]

    written = rows()
    ids = Counter(rid for rid, _, _ in written)
    assert [rid for rid, n in ids.items() if n != 1] == [], "a request with several rows"
    assert set(ids) == reached(), "rows exactly for the requests that reached a model"
    assert not any(s["body"]["model"] == "nope" for s in steps if s["rid"] in ids)
    assert sum(cost for _, _, cost in written) == pytest.approx(cost_total(metrics))
    assert cost_total(metrics) > 0

    lines = [e for e in server.events("request") if e.get("request_id") in sent]
    per_id = Counter(str(e["request_id"]) for e in lines)
    assert set(per_id) == sent, sent - set(per_id)
    assert [rid for rid, n in per_id.items() if n != 1] == [], "a request with several lines"
    status_of = {str(e["request_id"]): int(str(e["status"])) for e in lines}
    assert {rid: status for rid, status, _ in written} == {rid: status_of[rid] for rid in ids}
    for rid, client_saw in seen_by_client.items():
        if client_saw != "left" and status_of[rid] != 499:
            # A stream's status is its failure's when it failed after its 200.
            assert client_saw == str(status_of[rid]) or client_saw == "200", (rid, client_saw)
    assert statuses_counted(metrics) == Counter(str(s) for s in status_of.values())
