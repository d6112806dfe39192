"""Scheduling on the real server with the openai client: classes, keys' turns, no
starvation, spill on expected wait, Retry-After from the expected wait.

A model's one slot is held by a *blocker*: a stream of a long echo that the test closes
when the queue it built should start draining (the client leaving frees the slot). The
order requests were served in is the order of their access lines (one slot: each ends
before the next starts), told apart by their ``x-request-id``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import cluster_config, scripted
from tests.local.models import ASK, smollm2
from tests.support.poll import until, until_async
from tests.support.server import RunningServer

KEYS = {"chat": "interactive", "bulk": "standard", "small": "standard", "nightly": "batch"}
HI: list[Any] = [{"role": "user", "content": "hi"}]
LONG: list[Any] = [{"role": "user", "content": "word " * 2000}]  # 2000 chunks: 100 s


@pytest.fixture(scope="module")
def server(start_server: Callable[..., RunningServer]) -> RunningServer:
    one_slot = {"max_concurrency": 1, "queue_size": 64, "queue_timeout_s": 300, "retries": 0}
    return start_server(
        cluster_config(
            scripted("slow", options={"delay_ms": 50}, **one_slot),
            scripted("near", options={"delay_ms": 1000}, **one_slot),
            scripted("far"),
            scripted(
                "tiny",
                options={"delay_ms": 2000},
                max_concurrency=1,
                queue_size=1,
                queue_timeout_s=1,
                retries=0,
            ),
            routes=[{"alias": "assistant", "targets": ["near", "far"], "spill_after_s": 0.3}],
            auth={
                "api_keys": [
                    {"name": name, "key": f"k-{name}", "priority": priority}
                    for name, priority in KEYS.items()
                ]
            },
        )
    )


def client(server: RunningServer, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=f"k-{key}", max_retries=0)


def sync_client(server: RunningServer, key: str = "chat") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=f"k-{key}", max_retries=0)


def model_status(server: RunningServer, model: str) -> dict[str, Any]:
    [entry] = [m for m in server.status()["models"] if m["name"] == model]
    return entry  # type: ignore[no-any-return]


class Queue:
    """Requests built up behind a blocker on ``model``, then served in the server's order."""

    def __init__(self, server: RunningServer, model: str) -> None:
        self.server = server
        self.model = model
        self.tasks: list[asyncio.Task[Any]] = []
        self.ids: list[str] = []
        self.blocker: Any = None
        self.clients: dict[str, openai.AsyncOpenAI] = {}

    def client(self, key: str) -> openai.AsyncOpenAI:
        if key not in self.clients:
            self.clients[key] = client(self.server, key)
        return self.clients[key]

    async def block(self) -> None:
        self.blocker = await self.client("nightly").chat.completions.create(
            model=self.model, messages=LONG, stream=True
        )  # the stream is open: it holds the slot

    async def close(self) -> None:
        await self.blocker.close()
        for opened in self.clients.values():
            await opened.close()

    async def add(self, key: str, rid: str) -> None:
        """Send one request as ``key`` and wait until it is queued."""
        queued = len(self.ids) + 1
        self.ids.append(rid)
        request = self.client(key).chat.completions.create(
            model=self.model, messages=HI, extra_headers={"x-request-id": rid}
        )
        self.tasks.append(asyncio.create_task(request))
        await until_async(
            lambda: model_status(self.server, self.model)["queued"] == queued,
            what=f"{queued} requests queued",
        )

    async def served(self) -> list[str]:
        """Free the slot, wait for every reply; their ids in the order they were served."""
        await self.blocker.close()
        await asyncio.gather(*self.tasks)
        await self.close()
        lines = until(
            lambda: [
                e["request_id"]
                for e in self.server.events("request")
                if e.get("request_id") in self.ids
            ],
            accept=lambda seen: len(seen) == len(self.ids),
            what="an access line for each request",
        )
        return [str(rid) for rid in lines]


def test_an_interactive_request_is_served_before_twelve_waiting_batch_ones(
    server: RunningServer,
) -> None:
    async def run() -> list[str]:
        queue = Queue(server, "slow")
        await queue.block()
        for i in range(12):
            await queue.add("nightly", f"sched-batch-{i}")
        await queue.add("chat", "sched-interactive")
        return await queue.served()

    order = asyncio.run(run())
    assert order[0] == "sched-interactive", order
    assert order[1:] == [f"sched-batch-{i}" for i in range(12)]


def test_a_key_with_two_requests_is_not_held_back_by_one_with_sixteen(
    server: RunningServer,
) -> None:
    async def run() -> list[str]:
        queue = Queue(server, "slow")
        await queue.block()
        for i in range(16):
            await queue.add("bulk", f"fair-bulk-{i}")
        for i in range(2):
            await queue.add("small", f"fair-small-{i}")
        return await queue.served()

    order = asyncio.run(run())
    small = [order.index(f"fair-small-{i}") for i in range(2)]
    # Turns between the keys: bulk, small, bulk, small, then bulk's other fourteen.
    assert small == [1, 3], order
    assert order[-1] == "fair-bulk-15"


def test_a_batch_request_is_served_while_interactive_ones_keep_coming(
    server: RunningServer,
) -> None:
    async def run() -> list[str]:
        queue = Queue(server, "slow")
        await queue.block()
        await queue.add("nightly", "starve-batch")
        for i in range(24):
            await queue.add("chat", f"starve-interactive-{i}")
        return await queue.served()

    order = asyncio.run(run())
    # Interactive ones wait throughout; the batch one still gets one slot in ten.
    assert order.index("starve-batch") == 9, order


def test_a_busy_first_target_spills_to_the_second_at_once_and_is_used_again_when_idle(
    server: RunningServer,
) -> None:
    chat = sync_client(server)

    def ask(rid: str) -> str:
        raw = chat.chat.completions.with_raw_response.create(
            model="assistant", messages=HI, extra_headers={"x-request-id": rid}
        )
        assert raw.parse().choices[0].message.content == "hi"
        return raw.headers["x-appliance-model"]

    assert ask("spill-1") == "near"  # idle: the first target (a second's work, measured)

    async def busy_then_spill() -> tuple[str, str]:
        first = asyncio.create_task(asyncio.to_thread(ask, "spill-2"))
        await until_async(lambda: model_status(server, "near")["in_flight"] == 1, what="near busy")
        spilled = await asyncio.to_thread(ask, "spill-3")
        return await first, spilled

    busy, spilled = asyncio.run(busy_then_spill())
    assert (busy, spilled) == ("near", "far")
    lines = {e["request_id"]: e for e in server.events("request")}
    order = [e["request_id"] for e in server.events("request") if "spill-" in str(e["request_id"])]
    assert order.index("spill-3") < order.index("spill-2")  # it did not wait for near
    assert lines["spill-3"]["served_by"] == "far"
    [why] = lines["spill-3"]["spilled"]  # type: ignore[misc]
    assert why["model"] == "near" and why["reason"] == "queue"  # type: ignore[index]
    assert why["expected_wait_s"] > 0.3  # type: ignore[index, operator]
    assert "spilled" not in lines["spill-2"]
    assert server.metric("appliance_spills_total", model="near", reason="queue") == 1

    until(lambda: model_status(server, "near")["in_flight"] == 0, what="near idle")
    assert ask("spill-4") == "near"
    # A stream names the model that answers too, through an alias as well.
    streamed = chat.chat.completions.with_raw_response.create(
        model="assistant", messages=HI, stream=True
    )
    assert streamed.headers["x-appliance-model"] == "near"
    assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices) == "hi"


def test_a_full_queue_and_a_queue_timeout_say_retry_after_the_expected_wait(
    server: RunningServer,
) -> None:
    tiny = sync_client(server)
    tiny.chat.completions.create(model="tiny", messages=HI)  # two seconds: measured

    async def run() -> tuple[httpx.Headers, httpx.Headers]:
        queue = Queue(server, "tiny")
        await queue.block()
        await queue.add("chat", "retry-waiter")
        with pytest.raises(openai.RateLimitError) as full:
            await queue.client("chat").chat.completions.create(model="tiny", messages=HI)
        with pytest.raises(openai.InternalServerError) as timed_out:
            await queue.tasks[0]  # its queue_timeout_s (1 s) passes while the blocker holds
        await queue.close()
        return full.value.response.headers, timed_out.value.response.headers

    full, timed_out = asyncio.run(run())
    # One waiter ahead and at least two seconds a request: no less than four.
    assert int(full["retry-after"]) >= 4, full
    assert int(timed_out["retry-after"]) >= 2, timed_out
    assert server.metric("appliance_queue_wait_seconds_count", model="tiny", priority="interactive")


def test_a_local_model_that_is_not_loaded_is_spilled_past_while_it_loads(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(
        cluster_config(
            smollm2("local", load="on_demand", queue_timeout_s=120),
            scripted("cloud"),
            routes=[{"alias": "chat", "targets": ["local", "cloud"], "spill_after_s": 0.3}],
        )
    )
    api = sync_client(server)
    # Never loaded here: its load time is unknown, so the request goes on to the cloud at
    # once (a stream, named in its headers) and the local model starts loading.
    streamed = api.chat.completions.with_raw_response.create(
        model="chat", messages=ASK, stream=True, extra_headers={"x-request-id": "lazy-1"}
    )
    assert streamed.headers["x-appliance-model"] == "cloud"
    assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    [line] = until(lambda: server.events("request", request_id="lazy-1"))
    assert line["spilled"] == [{"model": "local", "reason": "load", "expected_wait_s": None}]
    until(
        lambda: model_status(server, "local")["lifecycle"]["state"] == "loaded",
        timeout=120,
        what="the local model loaded by the spilled request",
    )
    raw = api.chat.completions.with_raw_response.create(model="chat", messages=ASK, max_tokens=4)
    assert raw.headers["x-appliance-model"] == "local"
    assert server.metric("appliance_spills_total", model="local", reason="load") == 1
