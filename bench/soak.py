"""Soak: ``python bench/soak.py [--duration 600]``: memory and descriptors stay flat.

It starts the benchmark's fake upstream and the appliance in front of it with a config as
a user writes it (defaults, one key with limits, access log on), then for ``--duration``
seconds runs ``--users`` client loops that mix:

- plain chat requests,
- streams read to the end, with ``include_usage`` or without,
- streams the client leaves after a random number of chunks (a random disconnect),
- requests to a model whose upstream refuses connections (502/503 expected),
- requests with bad input (400s).

Every ``--sample-s`` it records the appliance's RSS (its whole process tree) and open
file descriptors. After the warm-up (the first ``--warmup`` share of the run) RSS may not
grow by more than 5% and descriptors must stay flat; it prints the figures and a verdict,
and exits 1 if either target is missed. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Proc, free_port, rss_mib, tree, wait_http

KEY = "soak-key"
CHAT = [{"role": "user", "content": "Say hello."}]


def open_fds(pid: int) -> int:
    total = 0
    for process in tree(pid):
        try:
            total += len(os.listdir(f"/proc/{process}/fd"))
        except OSError:
            continue
    return total


def write_config(folder: Path, upstream: str, dead: str) -> Path:
    config = folder / "soak.yaml"
    config.write_text(
        "auth:\n"
        "  api_keys:\n"
        f"    - {{name: soak, key: {KEY}, rpm: 1000000, tpm: 100000000}}\n"
        "models:\n"
        "  - name: chat\n"
        "    backend: openai\n"
        f"    options: {{base_url: '{upstream}', model: bench}}\n"
        "  - name: dead\n"
        "    backend: openai\n"
        f"    options: {{base_url: '{dead}', model: bench}}\n"
    )
    return config


async def user(
    session: aiohttp.ClientSession, base: str, until: float, rng: random.Random, seen: Counter[str]
) -> None:
    headers = {"Authorization": f"Bearer {KEY}"}
    url = f"{base}/chat/completions"
    while time.monotonic() < until:
        roll = rng.random()
        body: dict[str, object] = {"model": "chat", "messages": CHAT}
        kind = "plain"
        leave_after: int | None = None
        if roll < 0.30:
            pass
        elif roll < 0.55:
            kind = "stream"
            body.update(stream=True, x_chunks=16, x_chunk_delay_ms=rng.choice([0, 2, 10]))
            if rng.random() < 0.5:
                body["stream_options"] = {"include_usage": True}
        elif roll < 0.80:
            kind = "stream_left"
            body.update(stream=True, x_chunks=32, x_chunk_delay_ms=5)
            leave_after = rng.randint(0, 20)
        elif roll < 0.92:
            kind = "dead"
            body.update(model="dead", stream=rng.random() < 0.5)
        else:
            kind = "bad"
            body = {"model": "chat", "messages": [], "temperature": 9}
        try:
            async with session.post(url, json=body, headers=headers) as response:
                if leave_after is None:
                    await response.read()
                else:
                    lines = 0
                    async for _ in response.content:
                        lines += 1
                        if lines >= leave_after * 2:
                            break  # leaving: the connection is closed, not reused
                    response.close()
                seen[f"{kind}:{response.status}"] += 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            seen[f"{kind}:{type(exc).__name__}"] += 1


async def drive(base: str, users: int, duration: float, seed: int, seen: Counter[str]) -> None:
    until = time.monotonic() + duration
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(
            *(user(session, base, until, random.Random(seed + i), seen) for i in range(users))
        )


async def sample(pid: int, until: float, every: float, out: list[tuple[float, float, int]]) -> None:
    start = time.monotonic()
    while time.monotonic() < until:
        out.append((time.monotonic() - start, rss_mib(pid), open_fds(pid)))
        await asyncio.sleep(every)
    out.append((time.monotonic() - start, rss_mib(pid), open_fds(pid)))


async def soak(base: str, pid: int, args: argparse.Namespace) -> tuple[Counter[str], list]:
    seen: Counter[str] = Counter()
    samples: list[tuple[float, float, int]] = []
    until = time.monotonic() + args.duration
    await asyncio.gather(
        drive(base, args.users, args.duration, args.seed, seen),
        sample(pid, until, args.sample_s, samples),
    )
    return seen, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--users", type=int, default=16, help="concurrent client loops")
    parser.add_argument("--warmup", type=float, default=0.2, help="share of the run to skip")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="appliance-soak-") as folder:
        up_port, port = free_port(), free_port()
        upstream = Proc([sys.executable, str(Path(__file__).parent / "upstream.py"), str(up_port)])
        wait_http(f"http://127.0.0.1:{up_port}/v1/models")
        dead = f"http://127.0.0.1:{free_port()}/v1"
        config = write_config(Path(folder), f"http://127.0.0.1:{up_port}/v1", dead)
        server = Proc(
            [sys.executable, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)]
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            time.sleep(0.5)
            seen, samples = asyncio.run(soak(f"http://127.0.0.1:{port}/v1", server.pid, args))
        finally:
            server.stop()
            upstream.stop()

    warm = [s for s in samples if s[0] >= args.duration * args.warmup]
    rss_start, rss_end = warm[0][1], statistics.median(s[1] for s in warm[-3:])
    fds = [s[2] for s in warm]
    growth = (rss_end - rss_start) / rss_start * 100
    total = sum(seen.values())
    fives = sum(n for k, n in seen.items() if k.split(":")[1].startswith("5"))
    undocumented = {k: n for k, n in seen.items() if k.endswith((":500", ":504"))}
    print(f"requests: {total} in {args.duration:.0f} s ({total / args.duration:.0f}/s)")
    for name, count in sorted(seen.items()):
        print(f"  {name:28} {count}")
    print(f"5xx: {fives} (only the dead upstream's 502/503 are expected)")
    print(f"RSS after warm-up: {rss_start:.1f} MiB, at the end: {rss_end:.1f} MiB ({growth:+.2f}%)")
    print(f"open fds after warm-up: {fds[0]}, at the end: {fds[-1]}, max {max(fds)}")
    ok = growth < 5 and fds[-1] - fds[0] <= 4 and not undocumented
    ok = ok and all(k.startswith("dead:") for k in seen if k.split(":")[1].startswith("5"))
    print("verdict:", "PASS" if ok else "FAIL", "(RSS growth < 5%, fds flat, no stray 5xx)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
