"""Every error case answers with the OpenAI envelope and the right status, and the app
keeps serving afterwards."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import cluster_config, scripted
from tests.support.poll import until_async
from tests.support.schemas import assert_valid

CONFIG = cluster_config(
    scripted("m", ["Hello", " world."], workers=2),
    scripted("solo", ["x"], workers=1, max_concurrency=1, queue_size=0, options={"delay_ms": 300}),
    scripted(
        "waity",
        ["x"],
        workers=1,
        max_concurrency=1,
        queue_size=4,
        queue_timeout_s=0.1,
        options={"delay_ms": 400},
    ),
    scripted("vec", type="embedding"),
    server={"max_body_bytes": 8192},
    auth={
        "api_keys": [
            {"name": "all", "key": "k-all"},
            {"name": "only-vec", "key": "k-vec", "models": ["vec"]},
        ]
    },
)
AUTH = {"Authorization": "Bearer k-all"}
GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def expect_error(
    client: httpx.AsyncClient, response: httpx.Response, status: int, code: str | None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_valid("ErrorResponse", body)
    assert body["error"]["code"] == code
    still = await client.post("/v1/chat/completions", json=GOOD)
    assert still.status_code == 200, "the app must keep serving after an error"
    return body["error"]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"model": "m", "messages": [', "invalid_json"),
        (b"\xff\xfe not utf-8", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b"", "invalid_json"),
        (b"[" * 2000 + b"]" * 2000, "invalid_json"),
    ],
)
async def test_malformed_body_is_400(app_client: Any, content: bytes, code: str | None) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        await expect_error(client, response, 400, code)


@pytest.mark.parametrize(
    ("change", "param", "code"),
    [
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"temperature": -0.1}, "temperature", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"n": 0}, "n", "invalid_value"),
        ({"n": 10_000}, "n", "invalid_value"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
        ({"messages": None}, "messages", "invalid_type"),
        ({"messages": []}, "messages", "empty_array"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role", "invalid_value"),
        ({"stream": "yes"}, "stream", "invalid_type"),
        ({"model": 42}, "model", "invalid_type"),
    ],
)
async def test_invalid_parameter_is_400(
    app_client: Any, change: dict[str, Any], param: str, code: str
) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post("/v1/chat/completions", json={**GOOD, **change})
        error = await expect_error(client, response, 400, code)
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


async def test_missing_messages_is_400_naming_it(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post("/v1/chat/completions", json={"model": "m"})
        error = await expect_error(client, response, 400, "missing_required_parameter")
    assert error["param"] == "messages"
    assert "messages" in error["message"]


async def test_unknown_model_is_404_listing_models(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post("/v1/chat/completions", json={**GOOD, "model": "nope"})
        error = await expect_error(client, response, 404, "model_not_found")
    assert "nope" in error["message"]
    assert "m, solo, waity, vec" in error["message"]


async def test_wrong_model_type_is_400(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post("/v1/chat/completions", json={**GOOD, "model": "vec"})
        error = await expect_error(client, response, 400, "model_not_supported")
    assert error["message"].startswith("The model `vec` is an embedding model;"), error


async def test_body_over_limit_is_413(app_client: Any) -> None:
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 10_000}]}
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post("/v1/chat/completions", json=big)
        await expect_error(client, response, 413, "request_too_large")


async def test_chunked_body_over_limit_is_413(app_client: Any) -> None:
    async def chunks() -> Any:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 1000
        yield b'"}]}'

    async with app_client(CONFIG, AUTH) as client:
        response = await client.post(
            "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "content-length" not in response.request.headers
        await expect_error(client, response, 413, "request_too_large")


async def test_wrong_content_type_is_415(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post(
            "/v1/chat/completions", content=b"model=m", headers={"content-type": "text/plain"}
        )
        await expect_error(client, response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "didn't provide an API key"),
        ({"Authorization": "Bearer nope"}, "Incorrect API key"),
        ({"Authorization": "Basic k-all"}, "Malformed"),
    ],
)
async def test_bad_key_is_401(app_client: Any, headers: dict[str, str], message: str) -> None:
    async with app_client(CONFIG, AUTH) as client:
        client.headers.pop("Authorization")
        response = await client.post("/v1/chat/completions", json=GOOD, headers=headers)
        client.headers.update(AUTH)
        error = await expect_error(client, response, 401, "invalid_api_key")
    assert message in error["message"]


async def test_key_not_allowed_for_model_is_403(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.post(
            "/v1/chat/completions", json=GOOD, headers={"Authorization": "Bearer k-vec"}
        )
        await expect_error(client, response, 403, "model_not_allowed")
        listing = await client.get("/v1/models", headers={"Authorization": "Bearer k-vec"})
    assert [m["id"] for m in listing.json()["data"]] == ["vec"]


async def in_flight(client: httpx.AsyncClient, model: str) -> int:
    """Requests the model is serving now, from the status page."""
    models = (await client.get("/status.json")).json()["models"]
    [entry] = [m for m in models if m["name"] == model]
    return int(entry["in_flight"])


async def test_full_queue_is_429_with_retry_after(app_client: Any) -> None:
    body = {**GOOD, "model": "solo"}
    async with app_client(CONFIG, AUTH) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await until_async(lambda: in_flight(client, "solo"), what="the first request served")
        second = await client.post("/v1/chat/completions", json=body)
        assert (await first).status_code == 200
        await expect_error(client, second, 429, "model_overloaded")
    assert second.headers["retry-after"] == "1"


async def test_queue_wait_timeout_is_503_with_retry_after(app_client: Any) -> None:
    body = {**GOOD, "model": "waity"}
    async with app_client(CONFIG, AUTH) as client:
        first = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await until_async(lambda: in_flight(client, "waity"), what="the first request served")
        second = await client.post("/v1/chat/completions", json=body)
        assert (await first).status_code == 200
        await expect_error(client, second, 503, "service_unavailable")
    assert "retry-after" in second.headers


async def test_unknown_route_is_404_envelope(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.get("/v1/nothing-here")
        error = await expect_error(client, response, 404, "not_found")
    assert "/v1/nothing-here" in error["message"]


async def test_wrong_method_is_405_envelope(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        response = await client.get("/v1/chat/completions")
        await expect_error(client, response, 405, "method_not_allowed")


async def test_every_response_carries_a_request_id(app_client: Any) -> None:
    async with app_client(CONFIG, AUTH) as client:
        ok = await client.post("/v1/chat/completions", json=GOOD)
        bad = await client.post("/v1/chat/completions", json={"model": "m"})
        echoed = await client.get("/healthz", headers={"x-request-id": "trace-123"})
    assert ok.headers["x-request-id"].startswith("req_")
    assert bad.headers["x-request-id"] != ok.headers["x-request-id"]
    assert echoed.headers["x-request-id"] == "trace-123"
