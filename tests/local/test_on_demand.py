"""On-demand local models on the real server: loaded by a request, unloaded when idle.

Real models (SmolLM2 on llama.cpp, MiniLM on ONNX), each declared under several names to
stand for different models, behind the real Granian server and the openai client.

The tests share a server; each puts the models it needs into the state it starts from
(unloaded, through the admin route) and counts metrics and events as deltas, so each
passes alone and in any order. The model that fails to load has a server of its own: a
failed load leaves ``/readyz`` at 503 for good.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.local.models import ASK, alive, corrupt_gguf, minilm, smollm2
from tests.support.poll import until
from tests.support.server import RunningServer

ADMIN = "admin-secret-for-tests"
IDLE_S = 3.0


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., RunningServer], tmp_path_factory: pytest.TempPathFactory
) -> RunningServer:
    broken = corrupt_gguf(tmp_path_factory.mktemp("models"))
    on_demand = {"load": "on_demand", "queue_timeout_s": 120}
    config = cluster_config(
        smollm2("lazy", idle_unload_s=IDLE_S, **on_demand),
        smollm2("crowd", **on_demand),
        smollm2("broken", model={"path": broken}, **on_demand),
        minilm("emb"),
        scripted("echo"),
        server={"admin_key": ADMIN, "stream_ping_s": 0.2},
    )
    return start_server(config)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def status(server: RunningServer) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    body = httpx.get(f"{server.base_url}/status.json", headers=headers, timeout=10).json()
    return {m["name"]: m for m in body["models"]}


def state(server: RunningServer, model: str) -> str:
    return str(status(server)[model]["lifecycle"]["state"])


def pids(server: RunningServer, model: str) -> list[int]:
    return [w["pid"] for w in status(server)[model]["workers"] if w["pid"]]


def metric(server: RunningServer, name: str, **labels: str) -> float:
    return server.metric(name, ADMIN, **labels)


def events(server: RunningServer, name: str, **fields: Any) -> list[dict[str, Any]]:
    return server.events(name, **fields)


def admin(server: RunningServer, action: str, model: str, key: str = ADMIN) -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/admin/{action}",
        json={"model": model},
        headers={"Authorization": f"Bearer {key}"},
        timeout=120,
    )


def unloaded(server: RunningServer, *models: str) -> None:
    """Start from these models unloaded, whatever ran before."""
    for model in models:
        if state(server, model) != "unloaded":
            assert admin(server, "unload", model).json()["state"] == "unloaded"


def test_unloaded_models_are_listed_and_the_replica_is_ready(
    server: RunningServer, api: openai.OpenAI
) -> None:
    unloaded(server, "lazy", "crowd")
    ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["unavailable"] == []
    assert {"lazy", "crowd", "broken", "emb", "echo"} <= {m.id for m in api.models.list()}
    models = status(server)
    assert [models[m]["lifecycle"]["state"] for m in ("lazy", "crowd", "broken")] == [
        "unloaded"
    ] * 3
    assert models["emb"]["lifecycle"]["state"] == "loaded"  # load: startup, the default
    assert pids(server, "lazy") == []


def test_first_request_loads_the_model_and_gets_its_answer(
    server: RunningServer, api: openai.OpenAI
) -> None:
    unloaded(server, "lazy")
    loads = metric(server, "appliance_model_loads_total", model="lazy", result="ok")
    timed = metric(server, "appliance_model_load_seconds_count", model="lazy")
    reply = api.chat.completions.create(model="lazy", messages=ASK, max_tokens=24, temperature=0)
    assert "sky" in (reply.choices[0].message.content or "").lower()
    assert state(server, "lazy") == "loaded"
    lifecycle = status(server)["lazy"]["lifecycle"]
    assert lifecycle["memory_mb"] > 50 and lifecycle["last_used"] is not None
    assert metric(server, "appliance_model_loads_total", model="lazy", result="ok") == loads + 1
    assert metric(server, "appliance_model_load_seconds_count", model="lazy") == timed + 1


def test_idle_model_is_unloaded_and_its_processes_end(
    server: RunningServer, api: openai.OpenAI
) -> None:
    if state(server, "lazy") != "loaded":
        api.chat.completions.create(model="lazy", messages=ASK, max_tokens=2)
    [pid] = pids(server, "lazy")
    assert alive(pid)
    until(lambda: state(server, "lazy") == "unloaded", what="lazy unloaded when idle")
    assert not alive(pid)
    assert pids(server, "lazy") == []
    assert metric(server, "appliance_model_unloads_total", model="lazy", reason="idle") >= 1
    assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200


def test_a_stream_for_an_unloaded_model_pings_until_it_loads(server: RunningServer) -> None:
    until(lambda: state(server, "lazy") == "unloaded", what="lazy unloaded when idle")
    body = {"model": "lazy", "messages": ASK, "max_tokens": 8, "stream": True}
    lines: list[str] = []
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=120
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert first_data > 0 and all(line.startswith(":") for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]"
    assert not any('"error"' in line for line in lines)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/messages", {"max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/responses", {"max_output_tokens": 16, "input": "Hi"}),
    ],
)
def test_anthropic_and_responses_streams_ping_while_the_model_loads(
    server: RunningServer, path: str, body: dict[str, Any]
) -> None:
    until(lambda: state(server, "lazy") == "unloaded", what="lazy unloaded when idle")
    with httpx.stream(
        "POST",
        f"{server.base_url}{path}",
        json={"model": "lazy", "stream": True, **body},
        timeout=120,
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line]
    first_event = next(i for i, line in enumerate(lines) if not line.startswith(":"))
    assert first_event > 0, "no ping before the first event"
    assert not {"event: error", "event: response.failed"} & set(lines), lines
    assert lines[-1].startswith("data:")


def test_ten_concurrent_first_requests_cause_one_load(
    server: RunningServer, api: openai.OpenAI
) -> None:
    unloaded(server, "crowd")

    def counts() -> tuple[float, float, int]:
        return (
            metric(server, "appliance_model_loads_total", model="crowd", result="ok"),
            metric(server, "appliance_model_loads_total", model="crowd", result="failed"),
            len(events(server, "model_loading", model="crowd")),
        )

    before = counts()

    def ask(i: int) -> str:
        reply = api.chat.completions.create(model="crowd", messages=ASK, max_tokens=3)
        return reply.choices[0].finish_reason

    with ThreadPoolExecutor(10) as pool:
        reasons = list(pool.map(ask, range(10)))
    assert len(reasons) == 10 and set(reasons) <= {"length", "stop"}
    after = counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 0, 1]


def test_admin_unloads_and_loads_a_model_by_name(server: RunningServer) -> None:
    unloads = metric(server, "appliance_model_unloads_total", model="crowd", reason="admin")
    assert admin(server, "load", "crowd").json()["state"] == "loaded"
    [pid] = pids(server, "crowd")
    unloaded = admin(server, "unload", "crowd")
    assert unloaded.status_code == 200 and unloaded.json()["state"] == "unloaded"
    assert not alive(pid)
    loaded = admin(server, "load", "crowd")
    assert loaded.status_code == 200 and loaded.json()["state"] == "loaded"
    after = metric(server, "appliance_model_unloads_total", model="crowd", reason="admin")
    assert after == unloads + 1


def test_admin_endpoints_need_the_admin_key_and_a_local_model(server: RunningServer) -> None:
    assert admin(server, "unload", "crowd", key="wrong").status_code == 401
    not_local = admin(server, "load", "echo")
    assert not_local.status_code == 400
    assert not_local.json()["error"]["code"] == "model_not_local"
    assert admin(server, "load", "nope").status_code == 404


def test_a_model_that_fails_to_load_answers_503_and_the_others_keep_serving(
    start_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    broken = corrupt_gguf(tmp_path)
    server = start_server(
        cluster_config(
            smollm2("broken", model={"path": broken}, load="on_demand", queue_timeout_s=120),
            minilm("emb"),
            scripted("echo"),
            server={"admin_key": ADMIN},
        )
    )
    api = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)
    assert httpx.get(f"{server.base_url}/readyz", timeout=5).status_code == 200
    with pytest.raises(openai.APIStatusError) as caught:
        api.chat.completions.create(model="broken", messages=ASK, max_tokens=3)
    assert caught.value.status_code == 503
    message = str(caught.value.message)
    assert "Model 'broken' failed to load" in message
    assert "Failed to load model from file" in message  # the child's own reason

    loads = metric(server, "appliance_model_loads_total", model="broken", result="failed")
    again = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "broken", "messages": ASK},
        timeout=30,
    )
    assert again.status_code == 503
    assert again.json()["error"]["code"] == "model_load_failed"
    # Answered from the failure on record: no second load tried.
    assert metric(server, "appliance_model_loads_total", model="broken", result="failed") == loads
    assert int(again.headers["retry-after"]) >= 1

    vectors = api.embeddings.create(model="emb", input=["red apple", "blue sky"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    echoed = api.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": "still here"}]
    )
    assert echoed.choices[0].message.content == "still here"
    assert metric(server, "appliance_model_loads_total", model="broken", result="failed") >= 1
    ready = httpx.get(f"{server.base_url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["unavailable"] == ["broken"]
    assert status(server)["broken"]["lifecycle"]["last_error"].startswith("ValueError")
