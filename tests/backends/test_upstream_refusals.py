"""Upstream failures as the client sees them, through the real server.

- An upstream that cannot be reached is a 502 that says so without its address: the
  upstream's host and port are the operator's. The log keeps them.
- An upstream that refuses ``stream_options`` (which the appliance adds to learn a
  stream's usage) is recognised however it names the field: as the error's ``param``
  (OpenAI-style), or only in its message text, as vLLM (a 400 in its own envelope) and
  TGI (a 422) write it. The client's stream is then sent as it came, succeeds, and is
  charged an estimate; the upstream is not asked again.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, joined_content, sse_payloads
from tests.support.fake_upstream import FakeUpstream
from tests.support.poll import until
from tests.support.server import RunningServer, free_port, ledger_rows

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
DEAD_PORT = free_port()  # nothing listens there
DEAD = ("dead-plain", "dead-stream", "dead-messages", "dead-log")
REFUSERS = {
    "openai-style": "ok+rejects-stream-options",
    "vllm": "ok+rejects-stream-options+vllm",
    "tgi": "ok+rejects-stream-options+tgi",
}


def upstream_model(name: str, served: str, base_url: str) -> dict[str, Any]:
    return {
        "name": name,
        "backend": "openai",
        "options": {"base_url": base_url, "model": served},
        "health": {"interval_s": 0},
        "retries": 0,
    }


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("ledger")) / "usage.sqlite"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream, ledger: Path
) -> RunningServer:
    # Each test its own models: a dead upstream's failures eject its worker, and a
    # refusing upstream is learnt once; neither may depend on which test came first.
    dead = f"http://127.0.0.1:{DEAD_PORT}/v1"
    models = [upstream_model(name, "ok", dead) for name in DEAD]
    models += [upstream_model(name, served, upstream.base_url) for name, served in REFUSERS.items()]
    models += [
        upstream_model(f"{name}-asked", REFUSERS[name], upstream.base_url)
        for name in ("vllm", "tgi")
    ]
    return start_server(cluster_config(*models, state={"usage_path": str(ledger)}))


def chat(server: RunningServer, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **fields}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=30)


# --- an unreachable upstream ------------------------------------------------------------


def assert_no_address(message: str) -> None:
    assert "127.0.0.1" not in message, message
    assert str(DEAD_PORT) not in message, message
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", message), message


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_an_unreachable_upstream_is_a_502_without_its_address(
    server: RunningServer, stream: bool
) -> None:
    response = chat(server, "dead-stream" if stream else "dead-plain", stream=stream)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_unreachable"
    assert "Cannot connect to the upstream" in error["message"]
    assert "refused" in error["message"]
    assert_no_address(error["message"])


def test_an_unreachable_upstream_on_messages_is_a_502_without_its_address(
    server: RunningServer,
) -> None:
    body = {"model": "dead-messages", "max_tokens": 16, "messages": MESSAGES}
    response = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=30)
    assert response.status_code == 502, response.text
    payload = response.json()
    assert payload["type"] == "error"
    assert_no_address(payload["error"]["message"])


def test_the_log_keeps_the_upstreams_address(server: RunningServer) -> None:
    chat(server, "dead-log")
    events = until(
        lambda: server.events("upstream_unreachable"), what="an upstream_unreachable event"
    )
    detail = str(events[-1]["detail"])
    assert f"127.0.0.1:{DEAD_PORT}" in str(events[-1]["url"])
    assert str(DEAD_PORT) in detail


# --- upstreams that refuse stream_options -------------------------------------------------


def worker_state(server: RunningServer, model: str) -> dict[str, Any]:
    (entry,) = [m for m in server.status()["models"] if m["name"] == model]
    return dict(entry["workers"][0])


@pytest.mark.parametrize("name", REFUSERS)
def test_a_stream_from_an_upstream_refusing_stream_options_succeeds_and_is_charged(
    server: RunningServer, upstream: FakeUpstream, ledger: Path, name: str
) -> None:
    response = chat(server, name, stream=True)
    assert response.status_code == 200, response.text
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    assert joined_content(payloads) == "c0 c1 c2 "
    assert worker_state(server, name)["stream_usage"] is False
    query = (
        "SELECT input_tokens, output_tokens, status, estimated FROM requests "
        "WHERE model = ? ORDER BY ts"
    )
    rows = until(lambda: ledger_rows(ledger, query, name), what=f"a ledger row for {name}")
    input_tokens, output_tokens, status, estimated = rows[0]
    assert status == 200
    assert estimated
    assert input_tokens > 0 and output_tokens > 0
    # Known now: the next stream goes to the upstream once, as the client sent it.
    served = REFUSERS[name]
    before = len(upstream.seen(model=served))
    assert chat(server, name, stream=True).status_code == 200
    sent = upstream.seen(model=served)[before:]
    assert len(sent) == 1
    assert "stream_options" not in sent[0].body
    assert server.event_count("upstream_refuses_stream_options", worker=f"{name}/0") == 1


@pytest.mark.parametrize("name", ["vllm", "tgi"])
def test_a_client_asking_usage_from_a_refusing_upstream_gets_its_message(
    server: RunningServer, name: str
) -> None:
    response = chat(server, f"{name}-asked", stream=True, stream_options={"include_usage": True})
    assert response.status_code in (400, 422), response.text
    assert "stream_options" in response.json()["error"]["message"]


def test_a_refusal_naming_another_field_is_not_taken_for_one(
    start_server: Callable[..., RunningServer], upstream: FakeUpstream
) -> None:
    """A 400 that does not mention stream_options is the client's error, sent once."""
    model = upstream_model("bad", "fail-400", upstream.base_url)
    server = start_server(cluster_config(model))
    before = len(upstream.seen(model="fail-400"))
    response = chat(server, "bad", stream=True)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"
    assert len(upstream.seen(model="fail-400")) - before == 1
    assert worker_state(server, "bad")["stream_usage"] is True


def test_a_failed_probe_logs_the_upstreams_address(
    start_server: Callable[..., RunningServer],
) -> None:
    model = upstream_model("probed", "ok", f"http://127.0.0.1:{DEAD_PORT}/v1")
    model["health"] = {"interval_s": 0.2}
    server = start_server(cluster_config(model))
    events = until(lambda: server.events("worker_ejected"), what="the dead worker ejected")
    why = str(events[0]["why"])
    assert "probe failed" in why
    assert str(DEAD_PORT) in why
