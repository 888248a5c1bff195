"""When the worker releases memory between jobs: as ComfyUI's own job loop does it.

ComfyUI's `main.py` (`prompt_worker`) collects garbage and empties the allocator's cache
after a job, at most once every 10 s: at once when the last time was longer ago, else when
the queue has stayed empty until then (a job that arrives first runs first). A collection
costs time the next job would wait for, which is why it is not done after every job.
Pure: the job thread asks it how long to wait for work and whether to release now.
"""

from __future__ import annotations

import time
from typing import Callable

INTERVAL_S = 10.0  # prompt_worker's gc_collect_interval


class ReleaseSchedule:
    def __init__(self, interval_s: float = INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.pending = False  # a job ran since the last release
        self.last = float("-inf")

    def job_done(self) -> None:
        self.pending = True

    def due(self) -> bool:
        return self.pending and self.clock() - self.last >= self.interval_s

    def wait_s(self) -> float | None:
        """How long to wait for the next job before releasing; None: no release pending."""
        if not self.pending:
            return None
        return max(0.0, self.last + self.interval_s - self.clock())

    def released(self) -> None:
        self.pending = False
        self.last = self.clock()
