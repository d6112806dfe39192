"""The behaviour of DB-GPT's model-cluster API tests, ported to the appliance."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import cluster_config, joined_content, scripted, sse_payloads
from tests.support.schemas import assert_valid

REPLIES = [
    (["Hello", " world."], "Hello world."),
    (["你好，我是", "张三。"], "你好，我是张三。"),
]


def two_models(reply: list[str], keys: list[str] | None = None) -> dict[str, Any]:
    config = cluster_config(
        scripted("test-model-name-0", reply, workers=2),
        scripted("test-model-name-1", reply, workers=2),
    )
    if keys is not None:
        config["auth"] = {"api_keys": [{"name": f"k{i}", "key": k} for i, k in enumerate(keys)]}
    return config


CHAT = {
    "model": "test-model-name-0",
    "messages": [{"role": "user", "content": "Hello"}],
}


async def test_both_models_are_listed(app_client: Any) -> None:
    async with app_client(two_models(["x"])) as client:
        response = await client.get("/api/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert_valid("ListModelsResponse", body)
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["test-model-name-0", "test-model-name-1"]


@pytest.mark.parametrize(("reply", "expected"), REPLIES)
async def test_streamed_reply_joins_to_the_script(
    app_client: Any, reply: list[str], expected: str
) -> None:
    async with app_client(two_models(reply)) as client:
        response = await client.post("/api/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    for chunk in payloads[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
    assert joined_content(payloads) == expected


@pytest.mark.parametrize(("reply", "expected"), REPLIES)
async def test_plain_reply_equals_the_script(
    app_client: Any, reply: list[str], expected: str
) -> None:
    async with app_client(two_models(reply)) as client:
        response = await client.post("/api/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    body = response.json()
    assert_valid("CreateChatCompletionResponse", body)
    assert body["choices"][0]["message"]["content"] == expected


@pytest.mark.parametrize(
    ("client_key", "status"),
    [("abc", 200), ("xx", 200), (None, 401), ("error_api_key", 401)],
)
async def test_api_keys_are_enforced(app_client: Any, client_key: str | None, status: int) -> None:
    headers = {"Authorization": f"Bearer {client_key}"} if client_key else {}
    async with app_client(two_models(["Hello", " world."], keys=["abc", "xx"])) as client:
        response = await client.post("/api/v1/chat/completions", json=CHAT, headers=headers)
        alive = await client.get("/healthz")
    assert response.status_code == status
    if status == 401:
        assert_valid("ErrorResponse", response.json())
        assert response.json()["error"]["code"] == "invalid_api_key"
    else:
        assert response.json()["choices"][0]["message"]["content"] == "Hello world."
    assert alive.status_code == 200


async def test_without_keys_everything_is_open(app_client: Any) -> None:
    async with app_client(two_models(["Hello", " world."])) as client:
        response = await client.post(
            "/api/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer anything"}
        )
        listing = await client.get("/api/v1/models")
    assert response.status_code == 200
    assert listing.status_code == 200
