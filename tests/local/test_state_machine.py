"""A local model's state machine, one move at a time, with workers that only report.

Fake workers stand for the child processes (a test says when one comes up or ends), a
fake dispatcher for the model's queue; the memory budget is the real one. Each test
makes one move of :data:`appliance.local.states.MOVES` happen through the event that
causes it in the appliance.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from appliance.backends.base import Worker
from appliance.config.backends import LlamaCppModel
from appliance.errors import ServiceUnavailableError
from appliance.local.lifecycle import ModelLifecycle
from appliance.local.residency import Residency
from appliance.local.states import MOVES, State
from appliance.local.worker import ChildEnded
from tests.local.models import smollm2
from tests.support.poll import until_async


class FakeWorker:
    """A worker whose child comes up or ends when the test says."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.up = False
        self.loads = 0
        self.running = False
        self._changed: list[Callable[[Any], None]] = []
        self._ended: list[Callable[[Any, ChildEnded], None]] = []

    def watch(self, listener: Callable[[Any], None]) -> None:
        self._changed.append(listener)

    def watch_ends(self, listener: Callable[[Any, ChildEnded], None]) -> None:
        self._ended.append(listener)

    def load(self) -> None:
        if not self.running:
            self.loads += 1
            self.running = True

    async def unload(self) -> None:
        self.running = False
        self._set_up(False)

    async def close(self) -> None:
        await self.unload()

    def pid(self) -> int | None:
        return None

    def come_up(self) -> None:
        self._set_up(True)

    def end(self, reason: str, *, served: bool) -> None:
        self.running = False
        self._set_up(False)
        for listener in list(self._ended):
            listener(self, ChildEnded(reason, served=served))

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            for listener in list(self._changed):
                listener(self)


class FakeSlots:
    """The model's queue: requests waiting and in flight, as the test sets them."""

    queue_timeout_s = 5.0

    def __init__(self) -> None:
        self.queued = 0
        self.failed: list[BaseException] = []

    def waiting(self) -> list[asyncio.Future[Worker | None]]:
        return []

    def in_flight(self, worker: Worker) -> int:
        return 0

    def fail_waiters(self, error: BaseException) -> int:
        self.failed.append(error)
        return 0


def model(
    name: str = "m", residency: Residency | None = None, workers: int = 1, **fields: Any
) -> tuple[ModelLifecycle, list[FakeWorker], FakeSlots]:
    config = LlamaCppModel.model_validate(smollm2(name, workers=workers, **fields))
    fakes = [FakeWorker(f"{name}/{n}") for n in range(workers)]
    slots = FakeSlots()
    lifecycle = ModelLifecycle(config, fakes, slots, residency or Residency())  # type: ignore[arg-type]
    return lifecycle, fakes, slots


async def loading(lifecycle: ModelLifecycle, workers: list[FakeWorker]) -> None:
    """From unloaded, a request: the load starts its workers."""
    lifecycle.demand()
    assert lifecycle.state is State.LOADING
    await until_async(lambda: all(w.running for w in workers), what="the workers started")


async def loaded(lifecycle: ModelLifecycle, workers: list[FakeWorker]) -> None:
    await loading(lifecycle, workers)
    workers[0].come_up()
    assert lifecycle.state is State.LOADED


async def test_unloaded_to_loading_on_demand_one_load_for_many_requests() -> None:
    lifecycle, [worker], _ = model()
    assert lifecycle.state is State.UNLOADED
    await loading(lifecycle, [worker])
    lifecycle.demand()
    lifecycle.demand()
    assert lifecycle.state is State.LOADING and worker.loads == 1
    assert lifecycle.coming and not lifecycle.admits


async def test_loading_to_loaded_when_a_worker_comes_up() -> None:
    lifecycle, [worker], _ = model()
    await loading(lifecycle, [worker])
    worker.come_up()
    assert lifecycle.state is State.LOADED and lifecycle.admits


async def test_loading_to_unloaded_when_a_preload_finds_no_room() -> None:
    residency = Residency(budget_mb=300)
    holder, holder_workers, _ = model("holder", residency)
    lifecycle, [worker], _ = model("m", residency, load="on_demand", preload=True)
    residency.adopt([holder, lifecycle], 300)
    await loaded(holder, holder_workers)
    lifecycle.start()
    assert lifecycle.state is State.LOADING
    await until_async(lambda: lifecycle.state is State.UNLOADED, what="the preload given up")
    assert worker.loads == 0 and holder.state is State.LOADED  # nothing evicted


async def test_a_request_during_a_preload_that_finds_no_room_loads_it_evicting() -> None:
    residency = Residency(budget_mb=300)
    holder, holder_workers, _ = model("holder", residency)
    lifecycle, [worker], slots = model("m", residency, load="on_demand", preload=True)
    residency.adopt([holder, lifecycle], 300)
    await loaded(holder, holder_workers)
    async with residency._lock:  # the preload waits for the budget (another load makes room)
        lifecycle.start()
        lifecycle.demand()  # sees `loading`: starts nothing, but is not forgotten
        slots.queued = 1
    await until_async(lambda: worker.running, what="the model loading after all")
    assert holder.state is State.UNLOADED  # evicted for the waiting request
    worker.come_up()
    assert lifecycle.state is State.LOADED


async def test_loading_to_unloading_to_unloaded_when_unloaded_while_loading() -> None:
    lifecycle, [worker], _ = model()
    await loading(lifecycle, [worker])
    unload = asyncio.ensure_future(lifecycle.unload("admin"))
    await until_async(lambda: lifecycle.state is not State.LOADING, what="the unload begun")
    await unload
    assert lifecycle.state is State.UNLOADED and not worker.running


async def test_loading_to_failed_after_max_load_attempts() -> None:
    lifecycle, [worker], slots = model(max_load_attempts=1)
    await loading(lifecycle, [worker])
    worker.end("ValueError: Failed to load model from file", served=False)
    assert lifecycle.state is State.FAILED and not lifecycle.loadable
    assert isinstance(slots.failed[-1], ServiceUnavailableError)
    with pytest.raises(ServiceUnavailableError) as caught:
        lifecycle.demand()
    assert caught.value.code == "model_load_failed"
    assert "Failed to load model from file" in str(caught.value)
    assert "POST /admin/load" in str(caught.value)
    assert lifecycle.describe()["last_error"] == "ValueError: Failed to load model from file"


async def test_a_failed_load_below_the_cap_is_tried_again_and_answers_503_meanwhile() -> None:
    lifecycle, [worker], slots = model(max_load_attempts=2)
    await loading(lifecycle, [worker])
    worker.end("bad file", served=False)
    assert lifecycle.state is State.LOADING and not lifecycle.coming
    assert slots.failed and "Next try in" in str(slots.failed[-1])
    with pytest.raises(ServiceUnavailableError):
        lifecycle.demand()
    await until_async(lambda: worker.running, what="the second try")
    assert worker.loads == 2
    worker.end("bad file", served=False)
    assert lifecycle.state is State.FAILED
    assert lifecycle.describe()["failed_loads"] == 2


async def test_loaded_to_unloading_to_unloaded_on_unload() -> None:
    lifecycle, [worker], _ = model()
    await loaded(lifecycle, [worker])
    await lifecycle.unload("idle")
    assert lifecycle.state is State.UNLOADED and not worker.running and not lifecycle.admitted


async def test_loaded_to_loading_when_every_child_exited_then_back() -> None:
    lifecycle, [worker], _ = model()
    await loaded(lifecycle, [worker])
    worker.end("the worker process was killed by SIGKILL", served=True)
    assert lifecycle.state is State.LOADING and lifecycle.coming  # requests wait for it
    await until_async(lambda: worker.running, what="the child started again")
    worker.come_up()
    assert lifecycle.state is State.LOADED


async def test_loaded_stays_loaded_while_another_worker_serves() -> None:
    lifecycle, workers, _ = model(workers=2)
    await loading(lifecycle, workers)
    for worker in workers:
        worker.come_up()
    workers[0].end("exited", served=True)
    assert lifecycle.state is State.LOADED


async def test_failed_to_loading_on_an_admin_load() -> None:
    lifecycle, [worker], _ = model(max_load_attempts=1)
    await loading(lifecycle, [worker])
    worker.end("bad file", served=False)
    assert lifecycle.state is State.FAILED
    with pytest.raises(ServiceUnavailableError):
        lifecycle.demand()  # a request does not try again
    assert lifecycle.state is State.FAILED
    admin = asyncio.ensure_future(lifecycle.load(30))
    await until_async(lambda: worker.running, what="the admin load trying again")
    assert lifecycle.state is State.LOADING
    worker.come_up()
    await admin
    assert lifecycle.state is State.LOADED and lifecycle.describe()["last_error"] is None


@pytest.mark.parametrize("start", [State.LOADED, State.FAILED])
async def test_to_unloaded_when_closed(start: State) -> None:
    lifecycle, [worker], _ = model(max_load_attempts=1)
    await loading(lifecycle, [worker])
    if start is State.LOADED:
        worker.come_up()
    else:
        worker.end("bad file", served=False)
    assert lifecycle.state is start
    await lifecycle.close()
    assert lifecycle.state is State.UNLOADED and not lifecycle.admitted


async def test_a_failed_model_is_not_unloaded_by_the_budget_or_an_admin() -> None:
    lifecycle, [worker], _ = model(max_load_attempts=1)
    await loading(lifecycle, [worker])
    worker.end("bad file", served=False)
    await lifecycle.unload("admin")
    assert lifecycle.state is State.FAILED


def test_a_move_outside_the_table_is_refused() -> None:
    lifecycle, _, _ = model()
    with pytest.raises(RuntimeError, match="no move from unloaded to loaded"):
        lifecycle._move(State.LOADED)
    assert lifecycle.state is State.UNLOADED


def test_every_state_can_be_left_and_reached() -> None:
    assert set(MOVES) == set(State)
    reached = {to for moves in MOVES.values() for to in moves}
    assert reached == set(State)


async def test_retiring_models_count_until_gone_and_new_ones_wait_for_them() -> None:
    residency = Residency(budget_mb=300)
    old, old_workers, _ = model("m", residency)
    residency.adopt([old], 300)
    await loaded(old, old_workers)
    new, [worker], _ = model("m", residency, load="on_demand", preload=True)
    new.start()  # a reload's fresh model, before the swap: waits for it
    residency.adopt([new], 300)  # the swap: the old one is retiring, and still counts
    assert residency.retiring == [old]
    assert not worker.running and new.state is State.LOADING
    await old.close()  # drained and closed
    await until_async(lambda: worker.running, what="the preload after the old one left")
    assert residency.retiring == []
