"""The delivery loop: due order, a cap on attempts from the spool, rescheduling, never losing one."""

from __future__ import annotations

import asyncio

from supervisor.delivery.loop import Delivery, DeliveryLoop, SpooledJob
from supervisor.delivery.spool import SpoolRecord


def delivery(job_id: str) -> Delivery:
    record = SpoolRecord(
        job_id=job_id, webhook_id=f"msg_{job_id}", content_type="x", spooled_at=0.0, state="succeeded",
        created_at=0.0, timings_ms={},
    )
    return Delivery(record, SpooledJob(record), name=f"{job_id}.cb")


async def test_due_deliveries_go_in_order_at_most_n_at_once():
    started: list[str] = []
    release = asyncio.Event()
    in_flight = 0
    most = 0

    async def attempt(d: Delivery) -> float | None:
        nonlocal in_flight, most
        started.append(d.record.job_id)
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return None

    loop = DeliveryLoop(attempt, concurrency=2)
    for i, job_id in enumerate(["a", "b", "c", "d", "e"]):
        loop.schedule(delivery(job_id), 0.001 * i)
    task = asyncio.create_task(loop.run())
    while len(started) < 2:
        await asyncio.sleep(0.01)
    assert started == ["a", "b"]  # the cap holds the rest back
    release.set()
    while len(loop):
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert started == ["a", "b", "c", "d", "e"] and most == 2


async def test_a_failed_attempt_is_rescheduled_and_a_crashing_one_kept():
    calls: list[str] = []

    async def attempt(d: Delivery) -> float | None:
        calls.append(d.record.job_id)
        if d.record.job_id == "boom" and calls.count("boom") == 1:
            raise RuntimeError("a bug")
        return 0.01 if calls.count(d.record.job_id) < 3 else None

    loop = DeliveryLoop(attempt)
    loop.schedule(delivery("again"), 0)
    loop.schedule(delivery("boom"), 0)
    task = asyncio.create_task(loop.run())
    while calls.count("again") < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert loop.get("again") is None  # done after its third attempt
    assert loop.get("boom") is not None  # the bug cost it a delay (60 s), not its place


async def test_a_fresh_result_never_waits_behind_a_backlog_from_the_spool():
    release = asyncio.Event()
    started: list[str] = []

    async def attempt(d: Delivery) -> float | None:
        started.append(d.record.job_id)
        if d.from_spool:
            await release.wait()  # a slow Asset Service holds every attempt from disk
        return None

    loop = DeliveryLoop(attempt, concurrency=2)
    for job_id in ("old-1", "old-2", "old-3"):
        loop.schedule(delivery(job_id), 0)
    fresh = delivery("fresh")
    fresh.quick_attempts = 4  # a result of this process: its quick retries are ahead
    task = asyncio.create_task(loop.run())
    while len(started) < 2:
        await asyncio.sleep(0.01)
    loop.schedule(fresh, 0)
    while "fresh" not in started:
        await asyncio.sleep(0.01)
    assert started == ["old-1", "old-2", "fresh"]  # old-3 waits for a place; fresh did not
    release.set()
    while len(loop):
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert started[-1] == "old-3"
