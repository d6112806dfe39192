"""One owner per piece of worker state: up (worker), ejected (health), slots (dispatch)."""

from __future__ import annotations

import asyncio
from typing import Any

from appliance.serving.registry import ModelGroup
from tests.support.fake_workers import FakeWorker, fake_config
from tests.support.poll import until_async


async def group_of(
    count: int, max_concurrency: int | None = None, **health: Any
) -> tuple[ModelGroup, list[FakeWorker]]:
    health = {"interval_s": 0, "failures": 1, **health}
    config = fake_config(count, max_concurrency=max_concurrency, health=health)
    workers = [FakeWorker(f"m/{i}", config) for i in range(count)]
    group = ModelGroup(config, list(workers))
    await group.start()
    return group, workers


def states(group: ModelGroup) -> list[str]:
    return [w.state for w in group.snapshot().workers]


async def test_failures_eject_and_the_snapshot_shows_each_owner() -> None:
    group, workers = await group_of(2, cooldown_s=60)
    worker = await group.acquire()
    group.release(worker)
    group.report(worker, ok=False)
    held = await group.acquire()
    snapshot = group.snapshot()
    assert held is not worker
    expected = ["ejected" if w is worker else "healthy" for w in workers]
    assert states(group) == expected
    assert snapshot.available and snapshot.in_flight == 1
    assert group.available_workers() == [held]
    group.release(held)
    await group.close()


async def test_cool_down_readmission_never_makes_a_down_worker_available() -> None:
    group, [worker] = await group_of(1, cooldown_s=0.05)
    taken = await group.acquire()
    group.release(taken)
    group.report(worker, ok=False)
    worker.crash()
    assert states(group) == ["down"]
    await until_async(  # the cool-down is over: the ejection is lifted
        lambda: not group.snapshot().workers[0].ejected, what="the ejection lifted"
    )
    assert states(group) == ["down"] and not group.snapshot().available
    worker.restart()
    assert states(group) == ["healthy"] and group.snapshot().available
    await group.close()


async def test_a_restart_does_not_override_an_ejection_until_a_probe_succeeds() -> None:
    group, [worker] = await group_of(1, interval_s=30, timeout_s=1)
    worker.probe_fails = True
    group.report(worker, ok=False)
    worker.crash()
    worker.restart()  # a new child: up, but still ejected until its probe passes
    assert states(group) == ["ejected"]
    # Probed at once: the next one would come after 30 s, past this deadline.
    await until_async(lambda: worker.probes >= 1, timeout=20, what="a probe at once")
    assert states(group) == ["ejected"]
    worker.probe_fails = False
    worker.crash()
    worker.restart()
    await until_async(lambda: states(group) == ["healthy"], what="healthy after its probe")
    await group.close()


async def test_waiters_get_a_worker_that_comes_back_up() -> None:
    group, [worker] = await group_of(1, max_concurrency=1)
    held = await group.acquire()
    waiter = asyncio.create_task(group.acquire())
    await asyncio.sleep(0)
    worker.crash()
    group.release(held)  # a down worker's slot goes back, not to the waiter
    assert group.snapshot().in_flight == 0 and group.snapshot().queued == 1
    worker.restart()
    assert await waiter is worker
    group.release(worker)
    await group.close()


async def test_a_closed_worker_is_down_for_good() -> None:
    group, [worker] = await group_of(1)
    await group.close()
    assert states(group) == ["down"]
    worker.restart()
    assert states(group) == ["down"]


async def test_one_slow_probe_does_not_eject_a_worker_but_several_in_a_row_do() -> None:
    group, [worker] = await group_of(1, interval_s=0.05, timeout_s=0.05, failures=3)
    worker.probe_delay_s = 0.2
    # The second probe has begun: the first has timed out.
    await until_async(lambda: worker.probes >= 2, what="a second probe")
    assert states(group) == ["healthy"]
    group.report(worker, ok=True)  # a request that succeeds starts the count again
    await until_async(lambda: states(group) == ["ejected"], what="ejected after three")
    worker.probe_delay_s = 0.0
    await until_async(lambda: states(group) == ["healthy"], what="healthy again")
    await group.close()
