"""Play deploy/kubernetes under ``podman kube play`` and check it end to end.

Run by packaging/kube-check.sh (as root, with the images it built)::

    python -m tests.deploy.kube_play --work DIR --image IMG --redis-image IMG

What it plays (:func:`tests.deploy.manifests.for_podman`): the ConfigMap, the appliance
Deployment twice (one replica each, on two loopback ports) and the Redis StatefulSet as a
Pod with its volume claim, on a podman network of its own. What it checks, through the
published ports with the ``openai`` SDK (no retries, so nothing is hidden):

1. both pods serve the ConfigMap's config, keys from the Secret;
2. a ConfigMap edit is reloaded by both pods without a restart (the edit adds a key limited
   to 2 requests a minute and a slow model);
3. that rpm limit is one limit across the pods, through the Redis pod: request 1 on pod 0,
   2 on pod 1, 3 on pod 0 gets 429, and so does 4 on pod 1;
4. Redis runs with its append-only file on the claimed volume;
5. a pod stopped under load drains: streams in flight on it finish, none fails, it exits 0;
6. each pod's peak RSS stays under the Deployment's memory request (printed: the figures
   deployment.yaml's resources come from).

Everything it starts is removed again (``podman kube down``, the volumes, the network),
also on failure; kube-check.sh's trap does the same if this process is killed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import yaml

from tests.deploy import manifests
from tests.deploy.podman import (
    REPLICAS,
    Play,
    config_folder,
    peak_rss,
    podman,
    write_like_the_kubelet,
)
from tests.support.poll import until

SLOW_CHUNKS = 20
SLOW_DELAY_MS = 150  # a 3 s stream


def step(text: str) -> None:
    print(f"-- {text}", flush=True)


def chat(client: openai.OpenAI, model: str = "echo") -> str:
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}]
    )
    return reply.choices[0].message.content or ""


def wait_ready(play: Play) -> None:
    step(f"waiting for the pods to be ready on 127.0.0.1:{play.ports}")
    for i, port in enumerate(play.ports):
        until(
            lambda port=port: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5),
            accept=lambda r: r.status_code == 200,
            timeout=300,
            what=f"pod {i}'s /readyz",
        )


def check_serving(play: Play) -> None:
    wait_ready(play)
    for i in range(len(play.ports)):
        answer = chat(play.clients[i])
        assert answer == "Hello from the appliance.", answer
        uid = podman("exec", play.containers[i], "id", "-u").strip()
        assert uid != "0", f"pod {i} runs as root"
        read_only = podman(
            "inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", play.containers[i]
        ).strip()
        assert read_only == "true", f"pod {i}: root file system not read-only"
    print(f"both pods answer with the Secret's key: {answer!r}; uid {uid}, read-only root")


def edit_config(play: Play) -> str:
    """Edit the played ConfigMap as the kubelet updates a mounted one: a new folder, and
    the ``..data`` symlink swapped onto it. Returns the new key."""
    folder = config_folder()
    assert (folder / "cluster.yaml").is_symlink(), "not laid out as the kubelet does"
    config = yaml.safe_load((folder / "cluster.yaml").read_text())
    key = "kube-check-" + secrets.token_hex(8)
    config["auth"]["api_keys"].append({"name": "kube-check", "key": key, "rpm": 2})
    config["models"].append(
        {
            "name": "slow",
            "backend": "scripted",
            "max_concurrency": 64,
            "options": {"reply": ["tick "] * SLOW_CHUNKS, "delay_ms": SLOW_DELAY_MS},
        }
    )
    write_like_the_kubelet(folder, {"cluster.yaml": yaml.safe_dump(config, sort_keys=False)})
    return key


def check_reload_and_shared_limit(play: Play) -> None:
    step("ConfigMap edit (..data swapped): a key limited to 2 rpm and a slow model")
    key = edit_config(play)
    for i in range(REPLICAS):
        reloads = until(
            lambda i=i: play.events(i, "config_reloaded"),
            timeout=60,
            what=f"pod {i} reload",
        )
        print(f"pod {i}: config_reloaded, added {reloads[-1].get('added')}")
    limited = [
        openai.OpenAI(base_url=c.base_url, api_key=key, max_retries=0, timeout=60)
        for c in play.clients
    ]
    step("one rpm limit across both pods, through the Redis pod")
    codes = []
    for n, pod in enumerate([0, 1, 0, 1]):
        try:
            chat(limited[pod])
            codes.append(200)
        except openai.RateLimitError as exc:
            codes.append(exc.status_code)
        print(f"request {n + 1} on pod {pod}: {codes[-1]}")
    assert codes == [200, 200, 429, 429], codes
    redis = "appliance-redis-redis"
    auth = ["-e", f"REDISCLI_AUTH={play.secret['REDIS_PASSWORD']}"]
    appendonly = podman("exec", *auth, redis, "redis-cli", "config", "get", "appendonly")
    assert appendonly.split() == ["appendonly", "yes"], appendonly
    files = podman("exec", redis, "ls", "/data/appendonlydir").split()
    assert any(f.endswith(".aof") for f in files), files
    print(f"Redis: appendonly yes, {files} on its volume claim")


def check_drain(play: Play) -> None:
    step("a pod stopped under load drains: no request fails")
    rotation = [0, 1]
    lock = threading.Lock()
    stop = threading.Event()
    results: Counter[str] = Counter()
    in_flight = [0] * REPLICAS
    failures: list[str] = []
    rss: dict[int, int] = {}

    def client_loop(n: int) -> None:
        while not stop.is_set():
            with lock:
                pod = rotation[n % len(rotation)]
                in_flight[pod] += 1
            try:
                stream = play.clients[pod].chat.completions.create(
                    model="slow",
                    messages=[{"role": "user", "content": "hi"}],
                    stream=True,
                )
                text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                if text != "tick " * SLOW_CHUNKS:
                    raise AssertionError(f"incomplete stream: {text!r}")
                with lock:
                    results[f"pod {pod} ok"] += 1
            except Exception as exc:  # every failure counts: none is expected
                failures.append(f"pod {pod}: {type(exc).__name__}: {exc}")
            finally:
                with lock:
                    in_flight[pod] -= 1
            n += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        until(
            lambda: in_flight[0] >= 2 and results["pod 0 ok"] >= 4,
            timeout=60,
            what="load on pod 0",
        )
        rss[0] = peak_rss(play.containers[0])
        with lock:  # the Service drops the endpoint: no new request goes to pod 0
            rotation.remove(0)
            leaving = in_flight[0]
        # preStop's part (shortened): requests already on their way to pod 0 arrive
        time.sleep(0.2)
        started = time.monotonic()
        # The container, as the kubelet does: its pod's network stays until it has exited.
        # (`podman pod stop` stops the infra container at once too, cutting the streams.)
        podman("stop", "--time", "45", play.containers[0])
        took = time.monotonic() - started
        print(f"pod 0 left the rotation with {leaving} streams in flight; stopped in {took:.1f} s")
        until(lambda: results["pod 1 ok"] >= 8, timeout=60, what="load on pod 1")
        rss[1] = peak_rss(play.containers[1])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    print(f"requests: {dict(results)}; failures: {len(failures)}")
    assert not failures, failures[:5]
    code = podman("inspect", "--format", "{{.State.ExitCode}}", play.containers[0]).strip()
    assert code == "0", f"pod 0 exited {code}"
    draining = play.events(0, "draining")
    assert draining, "pod 0 never logged draining"
    # Streams open when SIGTERM came, every one of which its client read to the end.
    open_streams = draining[0]["open_streams"]
    assert open_streams >= 1, "no stream was in flight on pod 0 at its SIGTERM"
    print(f"pod 0: {open_streams} streams open at SIGTERM, all finished; exit 0")
    for i, value in sorted(rss.items()):
        print(
            f"pod {i}: peak RSS {value / 2**20:.0f} MiB (memory request "
            f"{play.memory_request / 2**20:.0f} MiB)"
        )
        assert value < play.memory_request, (i, value)


def check_local_models(work: Path, image: str, redis_image: str) -> None:
    """The local-models overlay: one pod serving SmolLM2 with the pod's CPU limit as its
    threads (the Downward API), on a read-only root file system, inside its memory."""
    step("the local-models overlay (deploy/kubernetes/local-models)")
    play = Play(work, image, redis_image, folder=manifests.LOCAL_MODELS, replicas=1)
    try:
        play.up()
        wait_ready(play)
        reply = play.clients[0].chat.completions.create(
            model="smollm2",
            temperature=0,
            max_tokens=40,
            messages=[
                {
                    "role": "user",
                    "content": "What is the capital of France? Answer in one sentence.",
                }
            ],
        )
        answer = reply.choices[0].message.content or ""
        print(f"smollm2: {answer!r}")
        assert "Paris" in answer, answer
        pid = podman("inspect", "--format", "{{.State.Pid}}", play.containers[0]).strip()
        children = subprocess.run(
            ["pgrep", "-P", pid], capture_output=True, text=True, check=False
        ).stdout.split()
        specs = [Path(f"/proc/{c}/cmdline").read_bytes().split(b"\0") for c in children]
        workers = [json.loads(a[a.index(b"--spec") + 1]) for a in specs if b"--spec" in a]
        threads = [w["options"]["n_threads"] for w in workers]
        print(f"model processes: {len(workers)}, n_threads {threads} (CPU limit {play.cpu_limit})")
        assert threads == [int(play.cpu_limit)], threads
        rss = peak_rss(play.containers[0])
        print(
            f"peak RSS {rss / 2**20:.0f} MiB (memory request {play.memory_request / 2**20:.0f} MiB)"
        )
        assert rss < play.memory_request, rss
    except BaseException:
        print("\n".join(play.logs(0).splitlines()[-15:]), file=sys.stderr)
        raise
    finally:
        play.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--redis-image", required=True)
    parser.add_argument("--keep", action="store_true", help="leave it running")
    args = parser.parse_args(argv)
    play = Play(args.work, args.image, args.redis_image)
    started = time.monotonic()
    try:
        step(f"podman kube play {play.file}")
        play.up()
        check_serving(play)
        check_reload_and_shared_limit(play)
        check_drain(play)
    except BaseException:
        for i in range(len(play.ports)):
            print(f"== pod {i} log (tail)", file=sys.stderr)
            print("\n".join(play.logs(i).splitlines()[-15:]), file=sys.stderr)
        raise
    finally:
        if not args.keep:
            play.down()
    if not args.keep:
        check_local_models(args.work, args.image, args.redis_image)
    print(f"kube play check passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
