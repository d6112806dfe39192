"""Hot reload and shutdown against the real server: nothing drops, nothing mixes."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import cluster_config, scripted, sse_payloads
from tests.support.poll import until, until_async
from tests.support.server import RunningServer, WatchWitness

KEY = "load-key"


def versioned(n: int) -> dict[str, Any]:
    models = [scripted("main", [f"v{n}:a", f"v{n}:b"], workers=2, options={"delay_ms": 20})]
    if n % 2:
        models.append(scripted("extra", ["x"]))
    return cluster_config(
        *models,
        auth={"api_keys": [{"name": "load", "key": KEY}, {"name": "rot", "key": f"rot-{n}"}]},
        server={"drain_timeout_s": 5},
    )


def rewrite(path: Path, config: dict[str, Any], in_place: bool) -> None:
    text = yaml.safe_dump(config)
    if in_place:
        with path.open("w") as handle:  # truncate, then write: as many editors do
            handle.write(text)
    else:
        tmp = path.with_name(".cluster.yaml.tmp")
        tmp.write_text(text)
        tmp.rename(path)


CONTENT = re.compile(r"^v(\d+):av\1:b$")


async def test_reload_under_load_drops_nothing_and_never_mixes(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(versioned(0))
    stop = asyncio.Event()
    failures: list[str] = []
    seen: list[int] = []
    body = {"model": "main", "messages": [{"role": "user", "content": "x"}]}

    async def plain(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                failures.append(f"plain {response.status_code} {response.text}")
                continue
            check(response.json()["choices"][0]["message"]["content"])

    async def streaming(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await client.post("/v1/chat/completions", json={**body, "stream": True})
            payloads = sse_payloads(response.text)
            if response.status_code != 200 or payloads[-1] != "[DONE]":
                failures.append(f"stream {response.status_code} {response.text[-200:]}")
                continue
            if any("error" in p for p in payloads[:-1]):
                failures.append(f"stream error event {payloads[-2]}")
                continue
            check(
                "".join(
                    c["delta"].get("content") or "" for p in payloads[:-1] for c in p["choices"]
                )
            )

    def check(content: str) -> None:
        match = CONTENT.match(content)
        if match is None:
            failures.append(f"mixed or wrong content {content!r}")
        else:
            seen.append(int(match.group(1)))

    headers = {"Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=server.base_url, headers=headers, timeout=10) as client:
        tasks = [asyncio.create_task(plain(client)) for _ in range(3)]
        tasks += [asyncio.create_task(streaming(client)) for _ in range(3)]
        rewrites = 24
        for n in range(1, rewrites + 1):
            await asyncio.sleep(0.3)  # pacing, not a wait: each version serves the load
            before = server.event_count("config_reloaded")
            rewrite(server.config_path, versioned(n), in_place=n % 2 == 0)
            await until_async(
                lambda before=before: server.event_count("config_reloaded") > before,
                what=f"the reload of version {n}",
            )

        async def final_content() -> str | None:
            reply = await client.post("/v1/chat/completions", json=body)
            content = str(reply.json()["choices"][0]["message"]["content"])
            return content if content == f"v{rewrites}:av{rewrites}:b" else None

        final = await until_async(final_content, what="the last version served")
        stop.set()
        await asyncio.gather(*tasks)
        rotated = await client.get(
            "/v1/models", headers={"Authorization": f"Bearer rot-{rewrites}"}
        )
        old_rotated = await client.get("/v1/models", headers={"Authorization": "Bearer rot-1"})

    assert failures == []
    assert len(seen) > 100
    assert len(set(seen)) >= 10, f"too few versions observed: {sorted(set(seen))}"
    assert final == f"v{rewrites}:av{rewrites}:b"
    assert rotated.status_code == 200 and old_rotated.status_code == 401
    assert [m["id"] for m in rotated.json()["data"]] == ["main"]  # 24 is even: no extra
    assert server.event_count("config_reloaded") >= rewrites
    # Raw text on purpose: a key value must appear in no line at all.
    assert "rot-" not in server.log().replace('"rot"', ""), "key values must not be logged"


def test_broken_file_keeps_serving_then_fix_is_picked_up(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(versioned(0))
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"model": "main", "messages": [{"role": "user", "content": "x"}]}

    def content() -> str:
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, headers=headers)
        assert response.status_code == 200
        return str(response.json()["choices"][0]["message"]["content"])

    text = yaml.safe_dump(versioned(7)).replace("workers: 2", "workers: plenty")
    server.config_path.write_text(text)
    [failed] = until(lambda: server.events("config_reload_failed"), what="config_reload_failed")
    problems = failed["problems"]
    assert isinstance(problems, list)
    assert any("models[0].workers (line" in problem for problem in problems)
    assert content() == "v0:av0:b"

    rewrite(server.config_path, versioned(8), in_place=True)
    until(lambda: content() == "v8:av8:b", what="the fixed file served")


def test_sighup_reloads_in_place(start_server: Callable[..., RunningServer]) -> None:
    config = versioned(0)
    config["server"]["watch_config"] = False
    server = start_server(config)
    headers = {"Authorization": f"Bearer {KEY}"}

    def served() -> list[str]:
        models = httpx.get(f"{server.base_url}/v1/models", headers=headers).json()
        return [m["id"] for m in models["data"]]

    witness = WatchWitness(server.config_path.parent, server.config_path.parent / "witness")
    try:
        unwatched = versioned(3)
        unwatched["server"]["watch_config"] = False
        rewrite(server.config_path, unwatched, in_place=False)
        witness.see_a_change()  # a watcher of this folder has had its chance
    finally:
        witness.stop()
    assert served() == ["main"], "watching is off: no reload yet"
    assert server.event_count("config_reloaded") == 0
    os.kill(server.process.pid, signal.SIGHUP)
    until(lambda: served() == ["main", "extra"], what="both models after SIGHUP")
    assert server.event_count("config_reloaded", reason="sighup") == 1


def test_a_key_a_reload_removed_stays_redacted(start_server: Callable[..., RunningServer]) -> None:
    """A key taken out of the config may still come in (a client not yet told): it is
    still a secret, and the log must not show it."""
    removed = "sk-removed-by-reload-0001"
    config = cluster_config(
        scripted("m", ["hi"]),
        auth={"api_keys": [{"name": "load", "key": KEY}, {"name": "old", "key": removed}]},
        server={"watch_config": False},
    )
    server = start_server(config)
    config["auth"]["api_keys"] = [{"name": "load", "key": KEY}]
    rewrite(server.config_path, config, in_place=False)
    os.kill(server.process.pid, signal.SIGHUP)
    until(lambda: server.event_count("config_reloaded") == 1, what="the reload")
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        refused = client.get("/v1/models", headers={"Authorization": f"Bearer {removed}"})
        assert refused.status_code == 401  # no longer a key of this server
        for _ in range(2):  # a fresh string, then a remembered one
            sent = client.get(f"/v1/models/{removed}", headers={"Authorization": f"Bearer {KEY}"})
            assert sent.status_code == 404
        caller_id = {"Authorization": f"Bearer {KEY}", "x-request-id": f"req-{removed}"}
        sent = client.get("/v1/models", headers=caller_id)  # a secret still: not adopted
        assert sent.status_code == 200 and sent.headers["x-request-id"].startswith("req_")
    until(lambda: server.event_count("request") >= 4, what="the access lines")
    paths = [line.get("path") for line in server.events("request")]
    assert paths.count("/v1/models/[REDACTED]") == 2
    assert removed not in server.log()


def _stream_then_sigterm(server: RunningServer, after_chunks: int) -> tuple[list[Any], float]:
    payloads: list[Any] = []
    body = {"model": "slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=30
    ) as response:
        lines = response.iter_lines()
        for line in lines:
            payloads += sse_payloads(line)
            if len(payloads) == after_chunks:
                os.kill(server.process.pid, signal.SIGTERM)
                signalled = time.monotonic()
                break
        for line in lines:
            payloads += sse_payloads(line)
    took = time.monotonic() - signalled
    server.process.wait(15)
    return payloads, took


def test_shutdown_lets_a_short_stream_finish(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(
        cluster_config(
            scripted("slow", [f"{i} " for i in range(6)], options={"delay_ms": 100}),
            server={"drain_timeout_s": 5},
        )
    )
    payloads, _ = _stream_then_sigterm(server, after_chunks=2)
    assert payloads[-1] == "[DONE]"
    text = "".join(c["delta"].get("content") or "" for p in payloads[:-1] for c in p["choices"])
    assert text == "0 1 2 3 4 5 "
    assert server.process.returncode == 0


def test_shutdown_ends_a_long_stream_with_an_error_event(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(
        cluster_config(
            scripted("slow", [f"{i} " for i in range(100)], options={"delay_ms": 100}),
            server={"drain_timeout_s": 1},
        )
    )
    payloads, took = _stream_then_sigterm(server, after_chunks=2)
    assert payloads[-1] == "[DONE]"
    assert payloads[-2]["error"]["code"] == "service_unavailable"
    chunks = [p for p in payloads[:-2] if p["choices"] and p["choices"][0]["delta"].get("content")]
    assert len(chunks) < 100, "the drain timeout ended the stream, not its last chunk"
    assert took > 0.8, "the stream had its drain_timeout_s of 1 s"
    assert server.events("streams_ended_at_shutdown")


def test_every_process_reloads(start_server: Callable[..., RunningServer]) -> None:
    config = versioned(0)
    config["server"].update(processes=2, admin_key="reload-admin")  # PIDs are the admin's
    server = start_server(config)
    headers = {"Authorization": f"Bearer {KEY}"}
    admin = {"Authorization": "Bearer reload-admin"}
    pids: set[int] = set()

    def both_up() -> bool:  # both processes up on v0 first
        pids.add(server.status("reload-admin")["pid"])
        return len(pids) == 2

    until(both_up, what="both Granian processes answering")
    changed = versioned(5)
    changed["server"].update(processes=2, admin_key="reload-admin")
    rewrite(server.config_path, changed, in_place=False)
    body = {"model": "main", "messages": [{"role": "user", "content": "x"}]}
    seen: dict[int, str] = {}

    def both_reloaded() -> bool:
        # New connections land on either process; both must answer the new reply.
        with httpx.Client(base_url=server.base_url, headers=headers) as fresh:
            pid = fresh.get("/status.json", headers=admin).json()["pid"]
            reply = fresh.post("/v1/chat/completions", json=body).json()
        seen[pid] = reply["choices"][0]["message"]["content"]
        return len(seen) == 2 and set(seen.values()) == {"v5:av5:b"}

    until(both_reloaded, what="both Granian processes answering v5")
    assert httpx.get(f"{server.base_url}/readyz").status_code == 200
    assert server.event_count("config_reloaded") >= 2
