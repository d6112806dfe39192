"""A model's ``timeout_s`` bounds a request, all attempts included: a 504, and the slot back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.conftest import cluster_config, scripted


async def test_a_reply_slower_than_the_models_deadline_is_a_504_and_frees_its_slot(
    app_client: Callable[..., Any],
) -> None:
    config = cluster_config(
        scripted(
            "slow",
            ["a", "b"],
            options={"delay_ms": 5000},
            timeout_s=0.1,
            retries=0,
            max_concurrency=1,
        ),
        scripted("quick", ["x"]),
    )
    body = {"messages": [{"role": "user", "content": "hi"}]}
    async with app_client(config) as client:
        for _ in range(2):  # the second finds the only slot free again
            reply = await client.post("/v1/chat/completions", json={**body, "model": "slow"})
            assert reply.status_code == 504, reply.text
            error = reply.json()["error"]
            assert error["code"] == "upstream_timeout"
            assert "deadline of 0.1s" in error["message"]
        reply = await client.post("/v1/chat/completions", json={**body, "model": "quick"})
        assert reply.status_code == 200  # the request's task went on after its timeout
