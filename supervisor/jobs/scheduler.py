"""Admission: one job holding the GPU slot, at most `queue.max_pending` waiting, the rest refused.

A job holds the slot from its admission until its model stage is over (or it ends before):
its prepare stage counts, its finish stage and its callback do not. A waiting job may be
handed to the worker early to be prepared while the slot's job is in the model; it still
waits here, in its place, until the slot is its.

Synchronous on purpose: every decision happens between two awaits of the event loop,
so of any number of simultaneous requests on an idle node exactly one gets the slot.
"""

from __future__ import annotations

import math
from collections import deque
from supervisor.jobs.job import Job


class Scheduler:
    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.current: Job | None = None
        self._pending: deque[Job] = deque()
        # Smoothed seconds a job holds the slot, for Retry-After; None until one finished.
        self._service_s: float | None = None

    @property
    def busy(self) -> bool:
        return self.current is not None

    @property
    def queue_length(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        return self.current is None and not self._pending

    def admit(self, job: Job) -> int | None:
        """The job's queue position (0: holds the slot now), or None when the node is full."""
        if self.current is None:
            self.current = job
            return 0
        if len(self._pending) < self.max_pending:
            self._pending.append(job)
            return len(self._pending)
        return None

    @property
    def next_pending(self) -> Job | None:
        """The job first in line after the slot's."""
        return self._pending[0] if self._pending else None

    def finish(self, job: Job, held_s: float | None = None) -> None:
        """Free the slot held by `job` and give it to the next waiting job. `held_s`: how long
        its model stage held the GPU (what Retry-After is estimated from)."""
        if self.current is not job:
            raise RuntimeError(f"job {job.job_id} does not hold the slot")
        if held_s is not None:
            self._service_s = held_s if self._service_s is None else 0.7 * self._service_s + 0.3 * held_s
        self.current = self._pending.popleft() if self._pending else None

    def requeue(self, job: Job, displace: bool = False) -> None:
        """Back in line, ahead of every job admitted after it (its worker died while it was
        finishing; it runs again): in admission order, even past `max_pending`. `displace`:
        the slot's job came later and runs again too (the same crash): `job` goes first."""
        current = self.current
        if current is None:
            self.current = job
            return
        if displace and current.accepted_mono > job.accepted_mono:
            self.current = job
            self._pending.appendleft(current)
            return
        index = next((i for i, waiting in enumerate(self._pending) if waiting.accepted_mono > job.accepted_mono),
                     len(self._pending))
        self._pending.insert(index, job)

    def waiting(self, job: Job) -> bool:
        """`job` is in line (not holding the slot)."""
        return job in self._pending

    def remove_pending(self, job: Job) -> bool:
        """Take a waiting job out of the queue (cancelled); False if it was not waiting."""
        try:
            self._pending.remove(job)
        except ValueError:
            return False
        return True

    def take_pending(self) -> list[Job]:
        """Remove and return every waiting job (used when a drain deadline passes)."""
        jobs = list(self._pending)
        self._pending.clear()
        return jobs

    def retry_after_s(self) -> int:
        """A hint for a refused client: about when a slot may be free again."""
        if self._service_s is None:
            return 1
        # A queue place frees up when the running job ends, whatever the queue length.
        return max(1, min(600, math.ceil(self._service_s)))
