"""A fast fake OpenAI upstream for the benchmark: ``python bench/upstream.py PORT``.

Plain chat replies are a fixed JSON body; ``stream: true`` sends ``x_chunks`` chunks
(default 16) ``x_chunk_delay_ms`` apart (default 0) after ``x_first_delay_ms``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import orjson
from aiohttp import web

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }
)


def chunk(i: int) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": "bench",
        "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def models(request: web.Request) -> web.Response:
    return web.Response(body=b'{"object":"list","data":[]}', content_type="application/json")


async def chat(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    if not body.get("stream"):
        return web.Response(body=REPLY, content_type="application/json")
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    first = float(body.get("x_first_delay_ms", 0)) / 1000
    delay = float(body.get("x_chunk_delay_ms", 0)) / 1000
    if first:
        await asyncio.sleep(first)
    for i in range(int(body.get("x_chunks", 16))):
        if delay and i:
            await asyncio.sleep(delay)
        await response.write(chunk(i))
    await response.write(b"data: [DONE]\n\n")
    return response


def main() -> None:
    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)


if __name__ == "__main__":
    main()
