"""The floor: the least a Python proxy on the appliance's stack can cost.

``python bench/floor.py PORT UPSTREAM_BASE``: Falcon on Granian's embedded server (one
process, uvloop), relaying ``/v1/chat/completions`` to the upstream over one pooled aiohttp
session, as the appliance does, and nothing else: no auth, no validation, no routing, no
limits, no metering, no logs. ``bench/run.py`` measures it beside the appliance, so the
appliance's own cost is the difference between the two columns.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import aiohttp
import falcon
import falcon.asgi
import uvloop
from granian.constants import Interfaces
from granian.server.embed import Server


class Relay:
    def __init__(self, upstream: str) -> None:
        self.url = f"{upstream}/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = await req.stream.read()
        headers = {"content-type": "application/json"}
        reply = await self.session.post(self.url, data=body, headers=headers)
        resp.content_type = reply.headers.get("content-type", "application/json")
        if resp.content_type.startswith("text/event-stream"):
            resp.stream = _relay(reply)
        else:
            resp.data = await reply.read()
            reply.release()


async def _relay(reply: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in reply.content.iter_any():
            yield chunk
    finally:
        reply.release()


class Ready:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"ready": True}


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    app = falcon.asgi.App()
    app.add_route("/v1/chat/completions", Relay(upstream))
    app.add_route("/readyz", Ready())
    server = Server(app, address="127.0.0.1", port=port, interface=Interfaces.ASGI, backlog=1024)
    uvloop.run(server.serve())  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
