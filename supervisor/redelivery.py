"""Results whose quick retries are spent, or found in the spool at start, waiting for
their next attempt.

One loop keeps them ordered by when they are due and starts at most `concurrency`
attempts at a time, so a backlog after a long outage neither floods the Asset Service
nor waits behind one slow attempt. What an attempt does (and how long until the next
one) is the caller's: the loop only keeps time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from ipc.jsonlog import EventLog
from supervisor.jobs import CallbackState
from supervisor.spool import SpoolRecord

CONCURRENCY = 4
ERROR_RETRY_S = 60.0
events = EventLog("supervisor.redelivery")


class CallbackStatus(Protocol):
    callback_state: CallbackState
    callback_attempts: int
    callback_last_status: int | None


@dataclass(eq=False)
class SpooledJob:
    """A job this process knows only from its spooled result (it ran before a restart)."""

    record: SpoolRecord
    callback_state: CallbackState = CallbackState.RETRYING
    callback_attempts: int = 0
    callback_last_status: int | None = None


@dataclass(eq=False)
class Delivery:
    """One result on its way to the Asset Service."""

    record: SpoolRecord
    # The job whose callback fields follow the attempts: a Job, or a SpooledJob after a restart.
    status: CallbackStatus
    name: str | None = None  # its spool file; None when it could not be written
    # In memory during the quick retries, or for good when it could not be spooled;
    # otherwise read from the spool for each attempt, so a backlog does not fill memory.
    body: bytes | None = None
    spool_failures: int = 0  # failed attempts since the quick retries were spent
    due: float = field(default=0.0, compare=False)


def spool_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Seconds to the next attempt from the spool: initial, doubling, capped."""
    return min(initial_s * 2.0 ** min(failures, 64), max_s)  # no float overflow, ever


class Redelivery:
    def __init__(
        self,
        attempt: Callable[[Delivery], Awaitable[float | None]],
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = CONCURRENCY,
    ) -> None:
        # `attempt` makes one attempt: the seconds until the next, or None when done.
        self._attempt = attempt
        self._clock = clock
        self._concurrency = concurrency
        self._heap: list[tuple[float, int, Delivery]] = []
        self._order = itertools.count()
        self._by_job: dict[str, Delivery] = {}
        self._in_flight: set[asyncio.Task] = set()
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._by_job)

    def get(self, job_id: str) -> Delivery | None:
        return self._by_job.get(job_id)

    def schedule(self, delivery: Delivery, delay_s: float) -> None:
        delivery.due = self._clock() + delay_s
        self._by_job[delivery.record.job_id] = delivery
        heapq.heappush(self._heap, (delivery.due, next(self._order), delivery))
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                now = self._clock()
                while self._heap and self._heap[0][0] <= now and len(self._in_flight) < self._concurrency:
                    due, _, delivery = heapq.heappop(self._heap)
                    if due != delivery.due or self._by_job.get(delivery.record.job_id) is not delivery:
                        continue  # rescheduled since, or done: a stale place in the heap
                    task = asyncio.get_running_loop().create_task(
                        self._run_one(delivery), name=f"redeliver-{delivery.record.job_id}"
                    )
                    self._in_flight.add(task)
                timeout = None
                if self._heap and len(self._in_flight) < self._concurrency:
                    timeout = max(0.0, self._heap[0][0] - now)
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in self._in_flight:
                task.cancel()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))

    async def _run_one(self, delivery: Delivery) -> None:
        delay: float | None = ERROR_RETRY_S
        try:
            delay = await self._attempt(delivery)
        except Exception:  # a bug must not lose the result: it stays on disk and is tried later
            events.exception("redelivery_error", job_id=delivery.record.job_id)
        finally:
            # Here, not in a done callback: the loop must see the free place when it wakes.
            self._in_flight.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._wake.set()
        if delay is None:
            if self._by_job.get(delivery.record.job_id) is delivery:
                del self._by_job[delivery.record.job_id]
        else:
            self.schedule(delivery, delay)
