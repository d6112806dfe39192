"""Embeddings, rerank, relevance, model cards and probes through the app."""

from __future__ import annotations

from typing import Any

from tests.conftest import cluster_config, scripted
from tests.support.schemas import assert_valid

CONFIG = cluster_config(
    scripted("chat", ["hi"]),
    scripted("vec", type="embedding", workers=3, options={"dimensions": 32}),
    scripted("rank", type="rerank", options={"dimensions": 64}),
    routes=[{"alias": "org/chat-latest", "targets": ["chat"]}],
)


async def test_embedding_batch_keeps_input_order_across_workers(app_client: Any) -> None:
    texts = [f"text number {i}" for i in range(7)]
    async with app_client(CONFIG) as client:
        batch = (await client.post("/v1/embeddings", json={"model": "vec", "input": texts})).json()
        single = (
            await client.post("/v1/embeddings", json={"model": "vec", "input": texts[5]})
        ).json()
    assert_valid("CreateEmbeddingResponse", batch)
    assert [d["index"] for d in batch["data"]] == list(range(7))
    assert batch["data"][5]["embedding"] == single["data"][0]["embedding"]
    assert batch["usage"]["prompt_tokens"] == 21


async def test_rerank_returns_best_first_with_top_n(app_client: Any) -> None:
    body = {
        "model": "rank",
        "query": "fresh red apple",
        "documents": ["tax law", "fresh red apple juice", "apple"],
        "top_n": 2,
    }
    async with app_client(CONFIG) as client:
        out = (await client.post("/v1/rerank", json=body)).json()
    assert [r["index"] for r in out["results"]] == [1, 2]
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


async def test_dbgpt_relevance_gives_scores_in_document_order(app_client: Any) -> None:
    body = {"model": "rank", "query": "red apple", "documents": ["tax law", "red apple"]}
    async with app_client(CONFIG) as client:
        relevance = (await client.post("/api/v1/beta/relevance", json=body)).json()
        rerank = (await client.post("/api/v1/rerank", json=body)).json()
    assert relevance["object"] == "list" and relevance["model"] == "rank"
    by_index = {r["index"]: r["relevance_score"] for r in rerank["results"]}
    assert relevance["data"] == [by_index[0], by_index[1]]
    assert relevance["data"][1] > relevance["data"][0]


async def test_model_card_by_id_including_slashes(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        card = await client.get("/v1/models/org/chat-latest")
        missing = await client.get("/v1/models/nope")
    assert card.status_code == 200
    assert_valid("Model", card.json())
    assert card.json()["id"] == "org/chat-latest"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_alias_is_listed_and_answers(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
        out = await client.post(
            "/v1/chat/completions",
            json={"model": "org/chat-latest", "messages": [{"role": "user", "content": "x"}]},
        )
    assert ids == ["chat", "vec", "rank", "org/chat-latest"]
    assert out.json()["choices"][0]["message"]["content"] == "hi"


async def test_readyz_reports_every_worker(app_client: Any) -> None:
    async with app_client(CONFIG) as client:
        ready = await client.get("/readyz")
        alive = await client.get("/healthz")
    assert ready.status_code == 200 and alive.status_code == 200
    models = ready.json()["models"]
    assert [w["id"] for w in models["vec"]["workers"]] == ["vec/0", "vec/1", "vec/2"]
    assert all(w["healthy"] for w in models["vec"]["workers"])


async def test_completions_stream_is_text_completion_chunks(app_client: Any) -> None:
    from tests.conftest import sse_payloads

    async with app_client(CONFIG) as client:
        out = await client.post(
            "/v1/completions", json={"model": "chat", "prompt": "x", "stream": True}
        )
    payloads = sse_payloads(out.text)
    assert payloads[-1] == "[DONE]"
    assert {p["object"] for p in payloads[:-1]} == {"text_completion"}
    assert "".join(p["choices"][0]["text"] for p in payloads[:-1]) == "hi"
