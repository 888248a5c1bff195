"""Admission: one job on the GPU, at most `queue.max_pending` waiting, the rest refused.

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
        """The job's queue position (0: runs now), or None when the node is full."""
        if self.current is None:
            self.current = job
            return 0
        if len(self._pending) < self.max_pending:
            self._pending.append(job)
            return len(self._pending)
        return None

    def finish(self, job: Job, held_s: float | None = None) -> None:
        """Free the slot held by `job` and give it to the next waiting job."""
        if self.current is not job:
            raise RuntimeError(f"job {job.job_id} does not hold the slot")
        if held_s is not None:
            self._service_s = held_s if self._service_s is None else 0.7 * self._service_s + 0.3 * held_s
        self.current = self._pending.popleft() if self._pending else None

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
