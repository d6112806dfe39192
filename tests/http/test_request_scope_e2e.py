"""One request, one account, through the real server and a real upstream.

Every request here carries its own ``x-request-id``, so its ledger row, its access line
and (through a model of its own) its ``appliance_requests_total`` series are its own:

- a client that leaves is 499 in all three, and is charged what the model did (a plain
  reply in full; a stream what was relayed);
- a request that reached no model (an unknown model, a key over its ``rpm``) has no row
  and is charged nothing: a ``tpm`` key keeps its room;
- an upstream that reports 10^19 prompt tokens is answered, its row is written with an
  estimate, and the ledger keeps writing later rows;
- ``count_tokens`` and a stream that fails mid-way have one status everywhere;
- HTTP/1.0 is served (a raw socket, ``curl --http1.0``).

A client "leaves" by closing its socket once the fake upstream has the request (so the
model has taken it), while the upstream still waits seconds before answering.
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from appliance.wire.usage import estimate
from tests.conftest import cluster_config, sse_payloads
from tests.support.fake_upstream import PLAIN_COMPLETION_TOKENS, PROMPT_TOKENS, FakeUpstream
from tests.support.poll import settled, until
from tests.support.server import RunningServer, ledger_rows

ADMIN = "scope-admin-key"
IN_PRICE = 1.0  # per token (per million: a million)
OUT_PRICE = 2.0
FULL_PLAIN_COST = PROMPT_TOKENS * IN_PRICE + PLAIN_COMPLETION_TOKENS * OUT_PRICE
ROW = "SELECT status, input_tokens, output_tokens, cost, estimated, currency FROM requests"


def model(name: str, served: str, upstream: FakeUpstream, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "retries": 0,
        "options": {"base_url": upstream.base_url, "model": served},
        "health": {"interval_s": 0},
        "pricing": {"input_per_mtok": IN_PRICE * 1e6, "output_per_mtok": OUT_PRICE * 1e6},
        **fields,
    }


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ledger") / "usage.sqlite"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, ledger: Path
) -> RunningServer:
    served = {
        "plain-leaves": "ok",
        "stream-leaves-early": "ok",
        "stream-leaves-mid": "ok",
        "plain": "ok",
        "tpm-model": "ok",
        "rpm-model": "ok",
        "huge": "ok+huge-usage",
        "after-huge": "ok",
        "counted": "ok",
        "uncounted": "ok+nousage",
        "fails-mid-stream": "error-mid-stream",
        "old-http": "ok",
        "never-read": "ok",
    }
    split = model("split-embed", "ok", upstream, type="embedding", workers=2)
    keys = [
        {"name": "open", "key": "k-open"},
        {"name": "tight", "key": "k-tight", "tpm": 20, "budget": {"amount": 1000}},
        {"name": "once", "key": "k-once", "rpm": 1},
    ]
    config = cluster_config(
        *(model(name, up, upstream) for name, up in served.items()),
        split,
        auth={"api_keys": keys, "window_s": 600},
        server={"admin_key": ADMIN, "send_timeout_s": 1},
        state={"usage_path": str(ledger)},
        billing={"currency": "EUR"},
    )
    return start_server(config)


def new_id(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex[:12]}"


def ask(rid: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"question {rid}"}]


def rows(ledger: Path, rid: str) -> list[tuple[Any, ...]]:
    return ledger_rows(ledger, f"{ROW} WHERE request_id = ?", rid)


def the_row(ledger: Path, rid: str) -> tuple[Any, ...]:
    """The request's one row, once it is written and no second one follows."""
    until(lambda: rows(ledger, rid), what=f"the row of {rid}")
    found = settled(lambda: rows(ledger, rid))
    assert len(found) == 1, found
    return found[0]


def no_row(server: RunningServer, ledger: Path, rid: str, witness: str) -> None:
    """No row for ``rid``: checked once the row of ``witness``, a request sent after it,
    is in the file (rows are written in order)."""
    post(server, "plain", witness)
    until(lambda: rows(ledger, witness), what="the witness's row")
    assert rows(ledger, rid) == []


def access_status(server: RunningServer, rid: str) -> int:
    lines = until(lambda: server.events("request", request_id=rid), what=f"{rid}'s access line")
    found = settled(lambda: server.events("request", request_id=rid))
    assert len(found) == 1, found
    assert lines[0]["status"] == found[0]["status"]
    return int(str(found[0]["status"]))


def requests_total(server: RunningServer, model: str, status: int) -> float:
    return server.metric("appliance_requests_total", ADMIN, model=model, status=str(status))


def cost_total(server: RunningServer, key: str) -> float:
    return server.metric("appliance_cost_total", ADMIN, key=key)


def post(
    server: RunningServer,
    model_name: str,
    rid: str,
    key: str = "k-open",
    **extra: Any,
) -> httpx.Response:
    body = {"model": model_name, "messages": ask(rid), **extra}
    headers = {"Authorization": f"Bearer {key}", "x-request-id": rid}
    return httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    )


def raw_request(server: RunningServer, path: str, body: dict[str, Any], rid: str) -> bytes:
    """An HTTP/1.1 POST of ``body`` as the key ``open``, with ``rid`` as its request id."""
    payload = orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        "Authorization: Bearer k-open\r\n"
        f"x-request-id: {rid}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    return head + payload


def leave_once_upstream_has_it(
    server: RunningServer, upstream: FakeUpstream, body: dict[str, Any], rid: str
) -> None:
    """Send ``body`` on a socket of our own, and close it once the upstream has it."""
    request = raw_request(server, "/v1/chat/completions", body, rid)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        until(
            lambda: any(rid in str(seen.body.get("messages")) for seen in upstream.requests),
            what="the upstream receiving the request",
        )
        sock.shutdown(socket.SHUT_RDWR)


# 1. A client that leaves: 499 everywhere, charged what the model did.


def test_a_client_that_stops_reading_its_stream_is_let_go(
    server: RunningServer, ledger: Path
) -> None:
    """It keeps its socket open and reads nothing: once a write has waited
    ``server.send_timeout_s``, it counts as gone (499), its stream is closed and the
    model's slot is free, while its socket is still open."""
    rid = new_id("never-read")
    body = {
        "model": "never-read",
        "messages": ask(rid),
        "stream": True,
        "x_chunks": 400_000,  # far more than the socket buffers hold
    }
    request = raw_request(server, "/v1/chat/completions", body, rid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(request)
        status, *_ = the_row(ledger, rid)  # written while the socket is still open
        assert status == 499
        assert access_status(server, rid) == 499
        until(
            lambda: server.metric("appliance_in_flight_requests", ADMIN, model="never-read") == 0,
            what="its slot free",
        )
    finally:
        sock.close()


def test_split_embeddings_whose_client_left_are_charged_as_499(
    server: RunningServer, upstream: FakeUpstream, ledger: Path
) -> None:
    """The batch goes to two workers side by side; the client leaves while both work. A
    model took the request as soon as the first part had a worker: it runs to its end
    and is charged, not cancelled unaccounted."""
    rid = new_id("split-embed")
    texts = [f"{rid} {i}" for i in range(4)]
    request = raw_request(
        server,
        "/v1/embeddings",
        {"model": "split-embed", "input": texts, "x_first_delay_ms": 1500},
        rid,
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        until(
            lambda: sum(rid in str(seen.body.get("input")) for seen in upstream.requests) == 2,
            what="both parts at the upstream",
        )
        sock.shutdown(socket.SHUT_RDWR)
    status, prompt, _, cost, _, _ = the_row(ledger, rid)
    assert status == 499
    assert prompt > 0 and cost > 0
    assert access_status(server, rid) == 499


def test_plain_request_whose_client_left_is_charged_in_full_as_499(
    server: RunningServer, upstream: FakeUpstream, ledger: Path
) -> None:
    rid = new_id("plain-leaves")
    counted = requests_total(server, "plain-leaves", 499)
    spent = cost_total(server, "open")
    body = {"model": "plain-leaves", "messages": ask(rid), "x_first_delay_ms": 3000}
    leave_once_upstream_has_it(server, upstream, body, rid)

    status, prompt, completion, cost, estimated, currency = the_row(ledger, rid)
    assert status == 499
    assert (prompt, completion, estimated) == (PROMPT_TOKENS, PLAIN_COMPLETION_TOKENS, 0)
    assert cost == pytest.approx(FULL_PLAIN_COST) and currency == "EUR"
    assert access_status(server, rid) == 499
    assert requests_total(server, "plain-leaves", 499) == counted + 1
    assert cost_total(server, "open") == pytest.approx(spent + FULL_PLAIN_COST)


def test_stream_whose_client_left_before_the_first_byte_is_499_and_no_more_than_its_prompt(
    server: RunningServer, upstream: FakeUpstream, ledger: Path
) -> None:
    rid = new_id("stream-early")
    counted = requests_total(server, "stream-leaves-early", 499)
    body = {
        "model": "stream-leaves-early",
        "messages": ask(rid),
        "stream": True,
        "x_first_delay_ms": 3000,
        "x_chunks": 40,
    }
    leave_once_upstream_has_it(server, upstream, body, rid)

    status, prompt, completion, cost, _, _ = the_row(ledger, rid)
    assert status == 499
    assert completion == 0
    most = max(estimate(body, 0).prompt, PROMPT_TOKENS)
    assert prompt <= most and cost <= most * IN_PRICE
    assert access_status(server, rid) == 499
    assert requests_total(server, "stream-leaves-early", 499) == counted + 1


def test_stream_whose_client_left_mid_way_is_499_and_charged_what_was_relayed(
    server: RunningServer, ledger: Path
) -> None:
    rid = new_id("stream-mid")
    counted = requests_total(server, "stream-leaves-mid", 499)
    ok = requests_total(server, "stream-leaves-mid", 200)
    body = {
        "model": "stream-leaves-mid",
        "messages": ask(rid),
        "stream": True,
        "x_chunks": 40,
        "x_chunk_delay_ms": 200,
    }
    headers = {"Authorization": "Bearer k-open", "x-request-id": rid}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers, timeout=30
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and "c1 " in line:
                break  # two chunks read: leave

    status, _, completion, _, estimated, _ = the_row(ledger, rid)
    assert status == 499
    full = estimate(body, sum(len(f"c{i} ") for i in range(40))).completion
    assert 1 <= completion < full / 2, "charged the chunks relayed, not the whole stream"
    assert estimated == 1
    assert access_status(server, rid) == 499
    assert requests_total(server, "stream-leaves-mid", 499) == counted + 1
    assert requests_total(server, "stream-leaves-mid", 200) == ok


# 2. A request that reached no model: no row, nothing charged.


def test_unknown_model_is_not_charged_and_a_tpm_key_keeps_its_room(
    server: RunningServer, ledger: Path
) -> None:
    spent = cost_total(server, "tight")
    refused = [new_id("unknown") for _ in range(5)]
    for rid in refused:
        assert post(server, "no-such-model", rid, key="k-tight").status_code == 404
    for rid in refused:
        assert access_status(server, rid) == 404
    # 5 estimates of the prompt would use up 20 tokens; the key still has all of them:
    # three requests of 7 tokens are admitted (0, 7, 14 used), the fourth is not.
    served = [new_id("tight") for _ in range(4)]
    codes = [post(server, "tpm-model", rid, key="k-tight").status_code for rid in served]
    assert codes == [200, 200, 200, 429]
    for rid in served[:3]:
        assert the_row(ledger, rid)[0] == 200
    no_row(server, ledger, served[3], new_id("witness"))
    for rid in refused:
        assert rows(ledger, rid) == []
    assert cost_total(server, "tight") == pytest.approx(spent + 3 * FULL_PLAIN_COST)


def test_key_over_its_rpm_is_refused_without_a_row_or_a_charge(
    server: RunningServer, ledger: Path
) -> None:
    first, second = new_id("rpm-first"), new_id("rpm-second")
    assert post(server, "rpm-model", first, key="k-once").status_code == 200
    assert the_row(ledger, first)[0] == 200
    refused = post(server, "rpm-model", second, key="k-once")
    assert refused.status_code == 429
    assert access_status(server, second) == 429
    no_row(server, ledger, second, new_id("witness"))
    assert cost_total(server, "once") == pytest.approx(FULL_PLAIN_COST)


# 3. An absurd usage figure does not stop the ledger.


def test_absurd_usage_is_answered_estimated_and_the_ledger_keeps_writing(
    server: RunningServer, ledger: Path
) -> None:
    plain, streamed = new_id("huge-plain"), new_id("huge-stream")
    assert post(server, "huge", plain).status_code == 200
    stream = post(server, "huge", streamed, stream=True, stream_options={"include_usage": True})
    assert stream.status_code == 200 and sse_payloads(stream.text)[-1] == "[DONE]"
    for rid in (plain, streamed):
        status, prompt, _, cost, estimated, _ = the_row(ledger, rid)
        assert status == 200 and estimated == 1
        assert 0 < prompt < 10**6, "an estimate of the prompt, not the upstream's 10^19"
        assert cost < 10**6

    later = [new_id("after-huge") for _ in range(6)]
    for rid in later:
        assert post(server, "after-huge", rid).status_code == 200
    for rid in later:
        assert the_row(ledger, rid)[0] == 200
    assert server.event_count("ledger_batch_refused") == 0


# 4. One status in the ledger, the metrics and the access line.


@pytest.mark.parametrize(("model_name", "expected"), [("counted", 200), ("uncounted", 400)])
def test_count_tokens_row_has_the_status_the_client_got(
    server: RunningServer, ledger: Path, model_name: str, expected: int
) -> None:
    rid = new_id(f"count-{model_name}")
    counted = requests_total(server, model_name, expected)
    response = httpx.post(
        f"{server.base_url}/v1/messages/count_tokens",
        json={"model": model_name, "messages": ask(rid)},
        headers={"x-api-key": "k-open", "x-request-id": rid, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert response.status_code == expected, response.text
    if expected == 200:
        assert response.json() == {"input_tokens": PROMPT_TOKENS}
    assert the_row(ledger, rid)[0] == expected
    assert access_status(server, rid) == expected
    assert requests_total(server, model_name, expected) == counted + 1


def test_stream_that_fails_mid_way_has_one_status_everywhere(
    server: RunningServer, ledger: Path
) -> None:
    rid = new_id("fails-mid")
    before = server.metrics_text(ADMIN)
    response = post(server, "fails-mid-stream", rid, stream=True)
    assert response.status_code == 200  # the failure came after the stream's 200
    assert any(isinstance(p, dict) and "error" in p for p in sse_payloads(response.text))

    status = the_row(ledger, rid)[0]
    assert status >= 500
    assert access_status(server, rid) == status
    assert requests_total(server, "fails-mid-stream", status) == 1 + metric_of(
        before, "fails-mid-stream", status
    )
    assert requests_total(server, "fails-mid-stream", 200) == metric_of(
        before, "fails-mid-stream", 200
    )


def metric_of(text: str, model_name: str, status: int) -> float:
    from tests.support.server import metric_in

    return metric_in(text, "appliance_requests_total", model=model_name, status=str(status))


# 6. HTTP/1.0 is served.


def test_http_1_0_on_a_raw_socket_is_answered_200(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):  # HTTP/1.0: the server closes after its answer
            received += chunk
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.0 200 OK", received


def test_http_1_0_chat_completion_through_curl(server: RunningServer, ledger: Path) -> None:
    rid = new_id("http10")
    body = orjson.dumps({"model": "old-http", "messages": ask(rid)}).decode()
    out = subprocess.run(
        [
            "curl",
            "--http1.0",
            "-sS",
            "--max-time",
            "30",
            "-H",
            "Authorization: Bearer k-open",
            "-H",
            "Content-Type: application/json",
            "-H",
            f"x-request-id: {rid}",
            "-d",
            body,
            "-w",
            "\n%{http_code} %{http_version}",
            f"{server.base_url}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    reply, _, trailer = out.rpartition("\n")
    assert trailer == "200 1", out  # curl writes HTTP/1.0 as "1"
    assert orjson.loads(reply)["choices"][0]["message"]["content"] == "fake reply"
    assert the_row(ledger, rid)[0] == 200
    assert access_status(server, rid) == 200
