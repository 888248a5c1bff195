"""The one delivery loop: every callback attempt, the first, the quick retries and the
redeliveries from the spool, is due at a time on one schedule and started by this loop.

Attempts from the spool (the quick retries are spent, or the result was found in the spool
at start) run at most `concurrency` at once and read their body from disk, so a backlog
after a long outage neither floods the Asset Service nor fills memory; a fresh result never
waits behind that backlog. What an attempt does, and when the next one is due, is the
caller's (`callback`, by `retry_policy`): the loop keeps time and order.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Protocol

from ipc.jsonlog import EventLog
from supervisor.jobs.job import CallbackState
from supervisor.delivery.spool import SpoolRecord

CONCURRENCY = 4
ERROR_RETRY_S = 60.0
events = EventLog("supervisor.delivery")


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
    quick_attempts: int = 0  # 1 + callback.max_retries for a fresh result; 0: from the spool already
    attempts: int = 0  # made by this process
    due: float = 0.0
    # Resolved once the quick retries are over (delivered, final, or left to the spool).
    quick_over: asyncio.Future | None = field(default=None, repr=False)

    @property
    def from_spool(self) -> bool:
        return self.attempts >= self.quick_attempts

    def end_quick_phase(self) -> None:
        if self.quick_over is not None and not self.quick_over.done():
            self.quick_over.set_result(None)


class Clock:
    """Real time: what the loop reads and how it waits (tests bring a fake one)."""

    now = staticmethod(time.time)

    async def wait(self, wake: asyncio.Event, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass


class DeliveryLoop:
    def __init__(
        self,
        attempt: Callable[[Delivery], Awaitable[float | None]],
        *,
        clock: Clock | None = None,
        concurrency: int = CONCURRENCY,
    ) -> None:
        # `attempt` makes one attempt: the seconds until the next, or None when done with it.
        self._attempt = attempt
        self.clock = clock or Clock()
        self._concurrency = concurrency
        # Two lanes of the one schedule, each in due order: fresh results, and those from disk.
        self._lanes: dict[bool, list[tuple[float, int, Delivery]]] = {False: [], True: []}
        self._order = itertools.count()
        self._by_job: dict[str, Delivery] = {}
        self._in_flight: set[asyncio.Task] = set()
        self._from_disk_in_flight = 0
        self._wake = asyncio.Event()

    def __len__(self) -> int:
        return len(self._by_job)

    def get(self, job_id: str) -> Delivery | None:
        return self._by_job.get(job_id)

    def schedule(self, delivery: Delivery, delay_s: float) -> None:
        delivery.due = self.clock.now() + delay_s
        self._by_job[delivery.record.job_id] = delivery
        heapq.heappush(self._lanes[delivery.from_spool], (delivery.due, next(self._order), delivery))
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                now = self.clock.now()
                self._start_due(False, now)
                self._start_due(True, now)
                await self.clock.wait(self._wake, self._next_in(now))
        finally:
            for task in self._in_flight:
                task.cancel()
            if self._in_flight:
                await asyncio.wait(set(self._in_flight))

    def _start_due(self, from_disk: bool, now: float) -> None:
        lane = self._lanes[from_disk]
        while lane and lane[0][0] <= now and not (from_disk and self._from_disk_in_flight >= self._concurrency):
            due, _, delivery = heapq.heappop(lane)
            if due != delivery.due or self._by_job.get(delivery.record.job_id) is not delivery:
                continue  # rescheduled since, or done: a stale place in the schedule
            self._from_disk_in_flight += from_disk
            task = asyncio.get_running_loop().create_task(
                self._run_one(delivery, from_disk), name=f"deliver-{delivery.record.job_id}"
            )
            self._in_flight.add(task)

    def _next_in(self, now: float) -> float | None:
        """Seconds until the next attempt may start; None: only a schedule() or a free place can tell."""
        dues = [self._lanes[False][0][0]] if self._lanes[False] else []
        if self._lanes[True] and self._from_disk_in_flight < self._concurrency:
            dues.append(self._lanes[True][0][0])
        return max(0.0, min(dues) - now) if dues else None

    async def _run_one(self, delivery: Delivery, from_disk: bool) -> None:
        delay: float | None = ERROR_RETRY_S
        try:
            delay = await self._attempt(delivery)
        except Exception:  # a bug must not lose the result: it stays on disk and is tried later
            events.exception("delivery_error", job_id=delivery.record.job_id)
        finally:
            # Here, not in a done callback: the loop must see the free place when it wakes.
            self._in_flight.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._from_disk_in_flight -= from_disk
            self._wake.set()
        if delay is None:
            if self._by_job.get(delivery.record.job_id) is delivery:
                del self._by_job[delivery.record.job_id]
        else:
            self.schedule(delivery, delay)
