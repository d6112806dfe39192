"""The queue's order: classes first, keys in turn, a share for a waiting lower class; a
full queue refuses the least deserving; the expected wait and Retry-After."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from appliance.backends.base import Worker
from appliance.config import Priority
from appliance.errors import RateLimitError, ServiceUnavailableError
from appliance.serving.dispatch import Dispatcher
from appliance.serving.scheduling import PASSED_OVER_AT_MOST
from tests.support.fake_workers import FakeWorker, started_fakes


class Clock:
    """Time that moves only when the test says."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def one_slot(pool: list[FakeWorker], **limits: Any) -> Dispatcher:
    settings = {"max_concurrency": 1, "queue_size": 100, "queue_timeout_s": 30.0, **limits}
    return Dispatcher("m", pool, **settings)


class Line:
    """Requests queued on a dispatcher whose one slot is held; :meth:`drain` serves them
    one at a time and says in which order they got the slot."""

    def __init__(self, d: Dispatcher, held: Worker) -> None:
        self.d = d
        self.held = held
        self.served: list[str] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def add(self, label: str, priority: Priority = "standard", key: str = "k") -> None:
        async def wait() -> None:
            worker = await self.d.acquire(priority=priority, key=key)
            self.served.append(label)
            self.held = worker

        self.tasks.append(asyncio.create_task(wait()))
        await asyncio.sleep(0)  # it is in the queue now

    async def serve(self, count: int) -> list[str]:
        """Give the slot back ``count`` times: the next ``count`` waiters get it."""
        start = len(self.served)
        for _ in range(count):
            self.d.release(self.held)
            await asyncio.sleep(0)
        return self.served[start:]

    async def drain(self) -> list[str]:
        await self.serve(self.d.queued)
        await asyncio.gather(*self.tasks)
        self.d.release(self.held)
        assert self.d.in_flight(self.held) == 0 and self.d.queued == 0
        return self.served


async def held_line(**limits: Any) -> Line:
    d = one_slot(await started_fakes(1), **limits)
    return Line(d, await d.acquire())


async def test_an_interactive_request_is_served_before_twelve_batch_ones() -> None:
    line = await held_line()
    for i in range(12):
        await line.add(f"batch{i}", "batch", key="nightly")
    await line.add("now", "interactive", key="chat")
    assert await line.serve(1) == ["now"]
    assert await line.drain() == ["now"] + [f"batch{i}" for i in range(12)]


async def test_classes_in_order_and_each_class_first_come_first_served() -> None:
    line = await held_line()
    await line.add("s1")
    await line.add("b1", "batch")
    await line.add("i1", "interactive")
    await line.add("s2")
    await line.add("i2", "interactive")
    assert await line.drain() == ["i1", "i2", "s1", "s2", "b1"]


async def test_keys_of_one_class_take_turns() -> None:
    line = await held_line()
    for i in range(16):
        await line.add(f"a{i}", key="bulk")
    await line.add("b0", key="small")
    await line.add("b1", key="small")
    order = await line.drain()
    # Turns: a0, b0, a1, b1, then the rest of bulk's in their own order.
    assert order[:4] == ["a0", "b0", "a1", "b1"]
    assert [o for o in order if o.startswith("a")] == [f"a{i}" for i in range(16)]


async def test_a_waiting_lower_class_gets_a_slot_after_being_passed_over_its_share() -> None:
    line = await held_line()
    await line.add("batch", "batch")
    for i in range(30):
        await line.add(f"i{i}", "interactive")
    order = await line.drain()
    assert order.index("batch") == PASSED_OVER_AT_MOST


async def test_a_share_is_not_saved_up_by_a_class_with_nothing_waiting() -> None:
    line = await held_line()
    for i in range(20):
        await line.add(f"i{i}", "interactive")
    await line.serve(15)  # nothing of a lower class waits meanwhile
    await line.add("batch", "batch")
    order = await line.drain()
    assert order.index("batch") == 20  # after the five left: it was never passed over before


async def test_a_full_queue_refuses_the_newest_of_a_lower_class() -> None:
    line = await held_line(queue_size=3)
    for i in range(3):
        await line.add(f"b{i}", "batch", key="nightly")
    await line.add("now", "interactive", key="chat")
    [refused] = await asyncio.gather(line.tasks[2], return_exceptions=True)
    assert isinstance(refused, RateLimitError) and refused.code == "model_overloaded"
    line.tasks = line.tasks[:2] + line.tasks[3:]
    assert await line.drain() == ["now", "b0", "b1"]


async def test_a_full_queue_refuses_a_newcomer_of_its_own_busiest_key_or_a_lower_class() -> None:
    line = await held_line(queue_size=2)
    await line.add("a0", key="a")
    await line.add("a1", key="a")
    with pytest.raises(RateLimitError):
        await line.d.acquire(key="a")
    with pytest.raises(RateLimitError):
        await line.d.acquire(priority="batch", key="b")
    await line.add("b0", key="b")  # another key of the class: a1 makes room
    [displaced] = await asyncio.gather(line.tasks[1], return_exceptions=True)
    assert isinstance(displaced, RateLimitError)
    line.tasks.pop(1)
    with pytest.raises(RateLimitError):  # one each now: nobody deserves less
        await line.d.acquire(key="c")
    assert await line.drain() == ["a0", "b0"]


async def test_the_expected_wait_counts_those_ahead_and_the_mean_service_time() -> None:
    clock = Clock()
    d = one_slot(await started_fakes(1), clock=clock)
    assert d.expected_wait_s() == 0.0  # a free slot
    held = await d.acquire()
    assert d.expected_wait_s() is None  # busy, and nothing measured yet
    clock.now += 2.0
    d.release(held)
    assert d.service_s() == pytest.approx(2.0)
    line = Line(d, await d.acquire())
    await line.add("b0", "batch")
    await line.add("b1", "batch")
    await line.add("s0")
    # Behind the one standard request (and the slot's holder): 2 x 2 s; behind all: 4 x 2 s.
    assert d.expected_wait_s("interactive") == pytest.approx(2.0)
    assert d.expected_wait_s("standard") == pytest.approx(4.0)
    assert d.expected_wait_s("batch") == pytest.approx(8.0)
    await line.drain()


async def test_a_full_queue_and_a_queue_timeout_carry_the_expected_wait_as_retry_after() -> None:
    clock = Clock()
    d = one_slot(await started_fakes(1), clock=clock, queue_size=1, queue_timeout_s=0.05)
    held = await d.acquire()
    clock.now += 5.0
    d.release(held)
    line = Line(d, await d.acquire())
    await line.add("s0")
    with pytest.raises(RateLimitError) as full:
        await d.acquire()
    assert full.value.retry_after == pytest.approx(10.0)  # one ahead, 5 s each
    assert full.value.headers()["retry-after"] == "10"
    [timed_out] = await asyncio.gather(*line.tasks, return_exceptions=True)
    assert isinstance(timed_out, ServiceUnavailableError)
    assert timed_out.retry_after == pytest.approx(5.0)
    d.release(line.held)


async def test_mixed_classes_and_keys_with_deadlines_and_cancellations_leave_no_slot() -> None:
    pool = await started_fakes(2)
    d = Dispatcher("m", pool, max_concurrency=1, queue_size=20, queue_timeout_s=0.02)
    classes: tuple[Priority, ...] = ("interactive", "standard", "batch")

    async def client(i: int) -> None:
        try:
            async with asyncio.timeout(0.01 + (i % 5) * 0.005):
                worker = await d.acquire(priority=classes[i % 3], key=f"k{i % 4}")
        except (TimeoutError, ServiceUnavailableError, RateLimitError):
            return
        try:
            await asyncio.sleep(0.005 * (i % 3))  # holding the slot a while: the race
        finally:
            d.release(worker)

    tasks = [asyncio.create_task(client(i)) for i in range(200)]
    for i, task in enumerate(tasks):
        if i % 7 == 0:
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert [d.in_flight(w) for w in pool] == [0, 0]
    assert d.queued == 0


async def test_a_failed_load_answers_the_waiters_of_every_class() -> None:
    line = await held_line()
    for priority in ("interactive", "standard", "batch"):
        await line.add(priority, priority)
    assert line.d.fail_waiters(ServiceUnavailableError("load failed")) == 3
    outcomes = await asyncio.gather(*line.tasks, return_exceptions=True)
    assert all(isinstance(o, ServiceUnavailableError) for o in outcomes)
    assert line.d.queued == 0
