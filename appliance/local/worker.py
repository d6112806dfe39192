"""Local models: each worker is a supervised child process.

The child (``appliance worker``) loads one model and serves it over the OpenAI wire
protocol on a loopback port, so this worker is an :class:`OpenAIWorker` pointed at it:
the same client code, pooling, timeouts and error mapping as any upstream, and
generation, which is CPU-bound, never blocks this process's event loop. The same command
runs a model on another machine.

Starting the worker only prepares it; :meth:`LocalWorker.load` starts one child and
:meth:`LocalWorker.unload` stops it. The worker decides nothing about the model: the
model's lifecycle (:mod:`appliance.local.lifecycle`) says when to load, unload and try
again. The worker waits for its child to report its port (after the model loaded and
answered a one-token warm-up), and reports how each child ended (:class:`ChildEnded`):
why a load failed (the last line the child wrote to stderr, which for a Python child is
the exception, or the signal that killed it, said in words a person can act on), or
that a child which served has exited. It is up while its child runs and serves.

Each child computes with its share of the cores (:mod:`appliance.local.threads`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from appliance.backends.base import ReplyStream
from appliance.backends.openai import OpenAIWorker, Upstream
from appliance.child import CALL_HEADER
from appliance.config.backends import LlamaCppModel, OnnxModel
from appliance.errors import (
    ModelCrashedError,
    ServiceUnavailableError,
    UpstreamConnectionError,
    UpstreamError,
)
from appliance.local.stderr import StderrTail
from appliance.local.stopping import CALL, StoppingStream, new_call, stop_call
from appliance.local.threads import with_threads
from appliance.runtime.self_command import self_command
from appliance.wire.openai.fields import LOCAL
from appliance.wire.openai.protocol import Endpoint

log = structlog.get_logger("appliance.local")

_CRASH_WAIT_S = 0.5  # a dying child is reaped within this of its connection dropping
_CRASH_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE}
)

_STOP_GRACE_S = 5.0
_HEALTH_WAIT_S = 5.0  # the child's /healthz, asked once it is ready


@dataclass(frozen=True)
class ChildEnded:
    """How one child ended: it failed to load (``served`` False), or exited after serving."""

    reason: str
    served: bool


EndListener = Callable[["LocalWorker", ChildEnded], None]


def death_reason(code: int, backend: str, said: str = "") -> str:
    """Why a child that exited with ``code`` ended, for a person to act on."""
    if code >= 0:
        return said or f"the worker process exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGILL:
        runtime = "llama.cpp build" if backend == "llama_cpp" else "model runtime"
        return (
            f"the worker process was killed by SIGILL: the {runtime} uses instructions "
            "this CPU lacks; rebuild with CMAKE_ARGS=-DGGML_NATIVE=OFF"
        )
    return f"the worker process was killed by {name}"


class LocalWorker(OpenAIWorker):
    """One child process running one model.

    Args:
        worker_id: ``<model>/<n>``.
        config: The model's declaration.
        threads: The child's ``n_threads`` when the declaration does not set one (see
            :func:`~appliance.local.threads.thread_share`); ``None``: the engine's own
            default (every core).

    Attributes:
        cpu: What the last child's runtime computes with, as its ``/healthz`` said once
            it was ready (llama.cpp: the CPU variant it chose and its features,
            ``icelake: SSE3 ... AVX512``); ``None``: not said (ONNX), or no child yet.
    """

    config: LlamaCppModel | OnnxModel
    stoppable = True  # a call cancelled stops the child's generation (see .stopping)
    fields = LOCAL  # what llama.cpp and ONNX Runtime take; an upstream's ``None`` is not

    def __init__(
        self, worker_id: str, config: LlamaCppModel | OnnxModel, threads: int | None = None
    ) -> None:
        upstream = Upstream(
            base_url="http://127.0.0.1:0/v1",  # known once the child reports its port
            model=config.name,
            first_byte_timeout_s=config.timeout_s,
            idle_timeout_s=config.timeout_s,
        )
        super().__init__(worker_id, config, upstream)
        self.process: asyncio.subprocess.Process | None = None
        self.restarts = 0  # children started after one that ended by itself
        self.spec = with_threads(config, threads)
        self.cpu: str | None = None
        self._ready = asyncio.Event()
        self._child: asyncio.Task[None] | None = None
        self._ended = False  # the last child ended by itself (not by unload)
        self._end_listeners: list[EndListener] = []
        self._stderr: StderrTail | None = None

    def watch_ends(self, listener: EndListener) -> None:
        """Call ``listener(worker, ended)`` whenever a child fails to load or exits."""
        self._end_listeners.append(listener)

    def load(self) -> None:
        """Start one child, unless one is starting or running (or the worker is closed)."""
        if self.closed or (self._child is not None and not self._child.done()):
            return
        if self._ended:
            self.restarts += 1
        self._ended = False
        self._child = asyncio.ensure_future(self._run_child())

    async def unload(self) -> None:
        """Stop the child; the worker stays usable and may :meth:`load` again."""
        child, self._child = self._child, None
        if child is not None:
            child.cancel()
            await asyncio.gather(child, return_exceptions=True)
        await self._stop_process()
        self._went_down()
        self._ended = False

    async def call(self, endpoint: Endpoint, body: dict[str, Any]) -> bytes:
        call_id = new_call()
        token = CALL.set(call_id)
        try:
            return await super().call(endpoint, body)
        except UpstreamConnectionError as exc:
            raise await self._crashed(exc) from exc
        except asyncio.CancelledError:
            await self._stop_call(call_id)  # the slot is free once the child is
            raise
        finally:
            CALL.reset(token)

    async def open_stream(
        self, endpoint: Endpoint, body: dict[str, Any], *, usage: bool = False
    ) -> ReplyStream:
        call_id = new_call()
        token = CALL.set(call_id)
        try:
            stream = await super().open_stream(endpoint, body, usage=usage)
        except UpstreamConnectionError as exc:
            raise await self._crashed(exc) from exc
        except asyncio.CancelledError:
            await self._stop_call(call_id)
            raise
        finally:
            CALL.reset(token)
        return StoppingStream(stream, lambda: self._stop_call(call_id), self._crashed)

    def _call_headers(self) -> dict[str, str]:
        call_id = CALL.get()
        return {**self._headers, CALL_HEADER: call_id} if call_id else self._headers

    async def _stop_call(self, call_id: str) -> None:
        """Stop the child's generation for ``call_id`` (see :mod:`.stopping`)."""
        root = self.base_url.removesuffix("/v1")
        await stop_call(self._session, root, call_id, self.worker_id)

    async def _crashed(self, exc: UpstreamConnectionError) -> UpstreamError:
        """``exc``, or a :class:`ModelCrashedError` if the child died of a fatal signal.

        A request that crashes llama.cpp (a grammar it cannot build, say) would crash
        every worker it failed over to; a child killed from outside (SIGKILL, SIGTERM)
        says nothing about the request, which may go on to another worker.
        """
        process = self.process
        if process is None:
            return exc
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), _CRASH_WAIT_S)
        code = process.returncode
        if code is None or -code not in _CRASH_SIGNALS:
            return exc
        log.error("local_worker_crashed_on_request", worker=self.worker_id, signal=-code)
        return ModelCrashedError(
            f"The model process crashed while serving this request (signal {-code}); "
            "it is not retried, as it would likely crash the next worker too."
        )

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def probe(self) -> None:
        if self.process is None or self.process.returncode is not None:
            raise ServiceUnavailableError(f"worker {self.worker_id} has no running process")
        await super().probe()

    async def close(self) -> None:
        self._mark_closed()
        await self.unload()
        await super().close()

    def pid(self) -> int | None:
        """The running child's process id."""
        process = self.process
        return process.pid if process is not None and process.returncode is None else None

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out["pid"] = self.pid()
        out["restarts"] = self.restarts
        out["n_threads"] = self.spec.options.n_threads
        out["cpu"] = self.cpu
        return out

    def _running(self) -> bool:
        """Up: its child reported its port (loaded, warmed up) and has not exited."""
        return self._ready.is_set()

    def _went_down(self) -> None:
        self._ready.clear()
        self._refresh()

    def _report(self, ended: ChildEnded) -> None:
        self._ended = True
        for listener in list(self._end_listeners):
            listener(self, ended)

    async def _run_child(self) -> None:
        """One child: started, served until it exits; how it ended goes to the listeners."""
        started = time.monotonic()
        port, reason = await self._spawn()
        if port is None:
            self._report(ChildEnded(reason, served=False))
            return
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.cpu = await child_cpu(self._session, self.base_url.removesuffix("/v1"))
        self._ready.set()
        self._refresh()
        log.info(
            "local_worker_ready",
            worker=self.worker_id,
            pid=self.pid(),
            load_s=round(time.monotonic() - started, 2),
        )
        assert self.process is not None
        code = await self.process.wait()
        self._went_down()
        if self.closed:
            return
        log.error("local_worker_exited", worker=self.worker_id, code=code)
        self._report(ChildEnded(death_reason(code, self.config.backend), served=True))

    async def _spawn(self) -> tuple[int | None, str]:
        """Start the child: its port once the model is loaded, or None and why not."""
        with tempfile.TemporaryDirectory(prefix="appliance-") as folder:
            port_file = Path(folder) / "port"
            process = self.process = await asyncio.create_subprocess_exec(
                *self_command(
                    "worker",
                    "--spec",
                    self.spec.model_dump_json(),
                    "--port-file",
                    str(port_file),
                    "--exit-with-parent",
                ),
                stdin=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            assert process.stderr is not None
            tail = self._stderr = StderrTail(process.stderr)  # held: tasks are weakly kept
            deadline = time.monotonic() + self.config.startup_timeout_s
            while time.monotonic() < deadline:
                if process.returncode is not None:
                    await tail.done()
                    code = process.returncode
                    reason = death_reason(code, self.config.backend, tail.last)
                    log.error(
                        "local_worker_failed_to_start",
                        worker=self.worker_id,
                        code=process.returncode,
                        reason=reason,
                    )
                    return None, reason
                with contextlib.suppress(OSError, ValueError):
                    return int(port_file.read_text()), ""
                await asyncio.sleep(0.05)
            log.error("local_worker_start_timeout", worker=self.worker_id)
            await self._stop_process()
            return None, f"the model did not load within {self.config.startup_timeout_s:g}s"

    async def _stop_process(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), _STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def child_cpu(session: aiohttp.ClientSession | None, root: str) -> str | None:
    """What the child at ``root`` computes with, as its ``/healthz`` says (see
    :attr:`appliance.child.engines.base.Engine.cpu`); ``None`` if it says nothing."""
    if session is None:
        return None
    try:
        async with asyncio.timeout(_HEALTH_WAIT_S):
            async with session.get(f"{root}/healthz") as response:
                said = await response.json() if response.status == 200 else {}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None  # a child that died or hangs: its supervisor and health checks say so
    cpu = said.get("cpu") if isinstance(said, dict) else None
    return cpu if isinstance(cpu, str) else None
