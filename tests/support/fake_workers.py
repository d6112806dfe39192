"""Workers that answer nothing, whose coming up and going down a test decides."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.backends.base import ReplyStream, Worker
from appliance.config import ScriptedModel
from appliance.errors import ServiceUnavailableError
from appliance.wire.openai.protocol import Endpoint


class FakeWorker(Worker):
    """A worker whose process a test starts and stops, and whose probe a test fails."""

    def __init__(self, worker_id: str, config: ScriptedModel) -> None:
        super().__init__(worker_id, config)
        self.running = True
        self.probe_fails = False
        self.probe_delay_s = 0.0  # a slow answer (an overloaded machine, a hung server)
        self.probes = 0

    def crash(self) -> None:
        """Its process exited: the worker is down."""
        self.running = False
        self._refresh()

    def restart(self) -> None:
        """A new process is running: the worker is up again."""
        self.running = True
        self._refresh()

    def _running(self) -> bool:
        return self.running

    async def probe(self) -> None:
        self.probes += 1
        if self.probe_delay_s:
            await asyncio.sleep(self.probe_delay_s)
        if self.probe_fails:
            raise ServiceUnavailableError(f"{self.worker_id} fails its probe")
        await super().probe()

    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        raise NotImplementedError

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, usage: bool = False
    ) -> ReplyStream:
        raise NotImplementedError


def fake_config(count: int, **fields: Any) -> ScriptedModel:
    """A model declaration for ``count`` fake workers."""
    return ScriptedModel.model_validate(
        {"name": "m", "backend": "scripted", "workers": count, **fields}
    )


async def started_fakes(count: int, **fields: Any) -> list[FakeWorker]:
    """``count`` fake workers, started (up)."""
    config = fake_config(count, **fields)
    workers = [FakeWorker(f"m/{i}", config) for i in range(count)]
    for worker in workers:
        await worker.start()
    return workers
