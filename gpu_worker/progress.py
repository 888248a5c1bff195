"""Where the running job is: the steps of its model's own loop, reported by the backend.

A backend calls `report(step, total)` from its loop (the reference backend per pass, the
ComfyUI backend from the engine's progress hook). While a job runs, the worker has put that
job's `Reporter` in place (`reporting`); a report only records the latest position there,
which costs the model's loop an assignment: it never waits, never raises, never sends.
The worker's I/O thread takes the latest position at most every `SEND_INTERVAL_S` (and once
more just before the job's result), so however fast a model steps, a job sends at most ten
progress messages a second, and the last position before the result is never lost.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# How often the I/O thread looks for a new position while a job runs.
SEND_INTERVAL_S = 0.1


class Reporter:
    """One job's latest position, written by the model's loop (any of the engine's threads),
    read by the worker's I/O thread. A tuple is replaced whole, so a reader never sees half
    of one."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.latest: tuple[int, int] | None = None
        self._taken: tuple[int, int] | None = None

    def report(self, step: int, total: int) -> None:
        try:
            step, total = int(step), int(total)
        except (TypeError, ValueError):
            return
        if total > 0 and 0 <= step <= total:  # else not a position in a loop
            self.latest = (step, total)

    def take(self) -> tuple[int, int] | None:
        """The latest position if it changed since the last take, else None (I/O thread only)."""
        latest = self.latest
        if latest is None or latest == self._taken:
            return None
        self._taken = latest
        return latest


_current: Reporter | None = None


def report(step: int, total: int) -> None:
    """Called by a backend at each step of its model's loop; a no-op outside a job (a
    warm-up, say)."""
    reporter = _current
    if reporter is not None:
        reporter.report(step, total)


@contextlib.contextmanager
def reporting(reporter: Reporter) -> Iterator[Reporter]:
    """While the job runs, `report` goes to its reporter (one job at a time per worker)."""
    global _current
    _current = reporter
    try:
        yield reporter
    finally:
        _current = None
