"""When a live worker must be killed anyway: a job over its time, or a silent worker.

The worker's heartbeats come from its I/O thread, which keeps beating while the job
thread computes. A worker that stops beating is stuck as a whole (a kernel holding the
GIL, a driver call that never returns, a stopped process), and one whose job runs past
`inference_timeout_s` is stuck in the model. Either way only a kill frees the GPU.

Pure logic on monotonic timestamps: the lifecycle core (`lifecycle.core`) asks it and acts on the verdict.
"""

from __future__ import annotations

from typing import NamedTuple

from supervisor.worker.reasons import KillReason


class Verdict(NamedTuple):
    reason: KillReason  # HEARTBEAT or WATCHDOG
    message: str  # the job's error message, and the log's


class Watchdog:
    def __init__(self, inference_timeout_s: float, heartbeat_timeout_s: float) -> None:
        self.inference_timeout_s = inference_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s

    def check(self, now: float, last_heard: float, job_started: float | None) -> Verdict | None:
        """Whether to kill the worker now.

        `last_heard`: when the worker last sent anything (a heartbeat or a result);
        `job_started`: when the running job was handed over, None when idle.
        """
        silent_s = now - last_heard
        if silent_s > self.heartbeat_timeout_s:
            return Verdict(
                KillReason.HEARTBEAT,
                f"the worker sent no heartbeat for {silent_s:.1f} s "
                f"(worker.heartbeat_timeout_s is {self.heartbeat_timeout_s:g})",
            )
        if job_started is not None and now - job_started > self.inference_timeout_s:
            return Verdict(
                KillReason.WATCHDOG,
                f"the job ran longer than worker.inference_timeout_s ({self.inference_timeout_s:g} s)",
            )
        return None

    def next_check_in(self, now: float, last_heard: float, job_started: float | None) -> float:
        """Seconds until a verdict could change if nothing is heard meanwhile (at least a
        little, so a clock that stands still cannot spin the caller)."""
        due = last_heard + self.heartbeat_timeout_s
        if job_started is not None:
            due = min(due, job_started + self.inference_timeout_s)
        return max(due - now, 0.0) + 0.01
