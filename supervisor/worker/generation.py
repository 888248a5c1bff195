"""One worker process as the lifecycle core sees it: a generation, from the spawn asked
for to its exit seen. Plain data plus the rules that concern it alone (its watchdog)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ipc.messages import Ready, StartupFailed
from supervisor.jobs.job import JobResult
from supervisor.worker.reasons import KillReason, describe_exit, exit_log_level
from supervisor.worker.watchdog import Verdict, Watchdog


class Phase(str, enum.Enum):
    SPAWNING = "spawning"  # asked for, no process yet
    LOADING = "loading"  # the process runs and loads the model
    IDLE = "idle"  # ready, no job
    BUSY = "busy"  # holds a job or more, in any of its stages
    LEAVING = "leaving"  # asked to exit or killed: until its exit is seen


class Stage(str, enum.Enum):
    """Where a job is in its worker (the worker's three threads, one job in each)."""

    PREPARE = "prepare"  # handed over, being decoded (or decoded and waiting: `queued`)
    MODEL = "model"  # on the GPU: from ModelStarted to ModelDone
    FINISH = "finish"  # resized and encoded, until its result


class ExitReport(NamedTuple):
    reason: str  # the restart label (or, for a stop, the kill reason)
    level: str  # of its worker_exited line
    fields: dict[str, Any]  # of its worker_exited line
    job_results: dict[str, JobResult]  # how each job it held ended, by id
    unreported_startup_failure: bool  # its status says the start failed, and no report came
    permanent: bool = False  # its status says no restart can mend it (ipc.exit_codes.UNRUNNABLE)


@dataclass(eq=False)
class RunningJob:
    job_id: str
    handed_at: float
    stage: Stage = Stage.PREPARE
    stage_since: float = 0.0  # when it entered its stage: the stage's time limit counts from here


@dataclass(eq=False)
class Generation:
    number: int  # unique for the life of the node
    watchdog: Watchdog  # its own limits: the heartbeat timeout must fit the interval it beats at
    heartbeat_interval_s: float
    startup_timeout_s: float
    phase: Phase = Phase.SPAWNING
    pid: int | None = None
    spawned_at: float | None = None
    ready_at: float | None = None
    last_heard: float = 0.0  # anything it sent counts as a sign of life
    watch_due: float = 0.0  # when its watchdog timer is due (a later firing: our loop was late)
    ready: Ready | None = None  # what it runs (backend, model version, device)
    # The jobs it holds, in the order they were handed over (which is their order through
    # the stages): at most one in prepare, one in model, and those finishing.
    jobs: dict[str, RunningJob] = field(default_factory=dict)
    # Set when we end it on purpose: why, and how its jobs end then (`abort_for`: the jobs
    # `abort_result` is for; None: all of them; the others end as in any crash).
    kill_reason: KillReason | None = None
    abort_result: JobResult | None = None
    abort_for: frozenset[str] | None = None
    retire_grace_s: float = 0.0
    # Replaced by the next worker while jobs were still finishing here: asked to exit
    # (RECYCLE) once the last one has ended.
    retire_when_done: bool = False
    startup_failure: StartupFailed | None = None
    # Spawned beside the current worker by a recycle with overlap: when that was asked.
    recycle_asked_at: float | None = None

    @property
    def serving(self) -> bool:
        """Loaded and not being ended: the watchdog watches it."""
        return self.phase in (Phase.IDLE, Phase.BUSY)

    def holds(self, job_id: str) -> bool:
        return job_id in self.jobs

    def in_stage(self, stage: Stage) -> RunningJob | None:
        """Its job in `stage` (the first, for FINISH), if any."""
        return next((job for job in self.jobs.values() if job.stage is stage), None)

    @property
    def model_stage_empty(self) -> bool:
        """No job of its own is in prepare or in the model: only finishing ones, if any."""
        return all(job.stage is Stage.FINISH for job in self.jobs.values())

    def new_limits(
        self, inference_timeout_s: float, heartbeat_interval_s: float, heartbeat_timeout_s: float,
        stage_timeout_s: float,
    ) -> None:
        """Reloaded watchdog limits. A worker spawned with another heartbeat interval keeps
        its heartbeat timeout until it is recycled: the new one may be shorter than its beats."""
        if heartbeat_interval_s != self.heartbeat_interval_s:
            heartbeat_timeout_s = self.watchdog.heartbeat_timeout_s
        self.watchdog = Watchdog(inference_timeout_s, heartbeat_timeout_s, stage_timeout_s)

    def verdict(self, now: float) -> Verdict | None:
        """Whether the watchdog wants it killed now (silent, or a job over its stage's time)."""
        return self.watchdog.check(now, self.last_heard, self._stages)

    def watch_in(self, now: float) -> float:
        """Seconds until a verdict could change if nothing is heard meanwhile."""
        return self.watchdog.next_check_in(now, self.last_heard, self._stages)

    def ran_for(self, now: float) -> float:
        """How long it served, for the restart policy: 0 if it never got ready (a start that
        failed after a long load is no healthy run, however long the load took)."""
        return 0.0 if self.ready_at is None else now - self.ready_at

    def exit_report(self, returncode: int, stopping: bool) -> ExitReport:
        """What its exit means: the restart label, what to log, how its job ended."""
        decoded = describe_exit(returncode, self.kill_reason)
        fields: dict[str, Any] = dict(
            pid=self.pid, returncode=returncode, reason=decoded.reason, description=decoded.description,
            generation=self.number,
        )
        if self.kill_reason is not None:
            fields["kill_reason"] = self.kill_reason.value
        if self.startup_failure is not None:
            fields.update(startup_failure=self.startup_failure.reason, startup_message=self.startup_failure.message)
        crashed = JobResult.failure("worker_crashed", f"the worker process died during the job: {decoded.description}")
        results = {
            job_id: self.abort_result if self.abort_result is not None
            and (self.abort_for is None or job_id in self.abort_for) else crashed
            for job_id in self.jobs
        }
        return ExitReport(
            decoded.reason, exit_log_level(self.kill_reason, stopping, decoded.startup_failed), fields, results,
            decoded.startup_failed and self.startup_failure is None and self.ready_at is None,
            decoded.permanent and self.ready_at is None,
        )

    def failure(self, exit_report: ExitReport) -> str:
        """Why it ended, in a line: its own report of a failed start, else its exit."""
        if self.startup_failure is not None:
            return f"{self.startup_failure.reason}: {self.startup_failure.message}"
        return exit_report.fields["description"]

    @property
    def _stages(self) -> list[tuple[str, Stage, float]]:
        return [(job.job_id, job.stage, job.stage_since) for job in self.jobs.values()]
