"""When a live worker must be killed anyway: a job over its time, or a silent worker.

The worker's heartbeats come from its I/O thread, which keeps beating while the stage
threads compute. A worker that stops beating is stuck as a whole (a kernel holding the
GIL, a driver call that never returns, a stopped process); one whose job's model stage runs
past `inference_timeout_s` is stuck in the model, and one whose job's prepare or finish
stage runs past `stage_timeout_s` is stuck decoding or encoding. Either way only a kill
frees the GPU.

Pure logic on monotonic timestamps: the lifecycle core (`lifecycle.core`) asks it and acts on the verdict.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from supervisor.worker.reasons import KillReason


class Verdict(NamedTuple):
    reason: KillReason  # HEARTBEAT or WATCHDOG
    message: str  # the job's error message, and the log's
    job_id: str | None = None  # the job over its stage's time; None: the worker went silent


# (job id, its stage, since when): what the watchdog reads of a worker's jobs.
JobStage = tuple[str, Any, float]


class Watchdog:
    def __init__(self, inference_timeout_s: float, heartbeat_timeout_s: float, stage_timeout_s: float = 120.0) -> None:
        self.inference_timeout_s = inference_timeout_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.stage_timeout_s = stage_timeout_s

    def limit_of(self, stage: Any) -> float:
        """The model stage has `inference_timeout_s`; prepare and finish `stage_timeout_s`."""
        return self.inference_timeout_s if getattr(stage, "value", stage) == "model" else self.stage_timeout_s

    def check(self, now: float, last_heard: float, jobs: Sequence[JobStage] = ()) -> Verdict | None:
        """Whether to kill the worker now.

        `last_heard`: when the worker last sent anything (a heartbeat or a result);
        `jobs`: each job it holds, with its stage and since when it is in it.
        """
        silent_s = now - last_heard
        if silent_s > self.heartbeat_timeout_s:
            return Verdict(
                KillReason.HEARTBEAT,
                f"the worker sent no heartbeat for {silent_s:.1f} s "
                f"(worker.heartbeat_timeout_s is {self.heartbeat_timeout_s:g})",
            )
        for job_id, stage, since in jobs:
            limit = self.limit_of(stage)
            if now - since > limit:
                name = getattr(stage, "value", stage)
                key = "worker.inference_timeout_s" if name == "model" else "worker.stage_timeout_s"
                return Verdict(KillReason.WATCHDOG, f"the job's {name} stage ran longer than {key} ({limit:g} s)", job_id)
        return None

    def next_check_in(self, now: float, last_heard: float, jobs: Sequence[JobStage] = ()) -> float:
        """Seconds until a verdict could change if nothing is heard meanwhile (at least a
        little, so a clock that stands still cannot spin the caller)."""
        due = last_heard + self.heartbeat_timeout_s
        for _, stage, since in jobs:
            due = min(due, since + self.limit_of(stage))
        return max(due - now, 0.0) + 0.01
