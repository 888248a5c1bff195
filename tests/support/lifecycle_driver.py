"""Drives the pure lifecycle core on a fake clock, as the shell would: it keeps the timers
the core sets and fires them when the clock passes them, and records every action."""

from __future__ import annotations

from typing import Any

from ipc.messages import (
    PROTOCOL_VERSION, Heartbeat, Hello, JobFailed, JobPrepared, JobSucceeded, ModelDone, ModelStarted, Ready,
    StartupFailed,
)
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.worker.lifecycle.events import (
    CancelTimer, EndJob, Exited, JobOffered, Kill, Limits, Log, MemoryMeasured, Received, ReportState, SetTimer,
    Spawn, Spawned, Start, Timer, TimerFired,
)
from supervisor.worker.overlap import MemoryFigures

READY = Ready(backend="reference", model_version="reference-1", device="cpu", load_time_s=0.5)


class Driver:
    def __init__(self, **limits: Any) -> None:
        self.core = Lifecycle(Limits(**limits))
        self.now = 0.0
        self.due: dict[Timer, float] = {}
        self.actions: list = []  # everything the core asked for, in order
        self.pids: dict[int, int] = {}

    # --- feeding -------------------------------------------------------------------

    def feed(self, event) -> list:
        actions = self.core.handle(event, self.now)
        for action in actions:
            if isinstance(action, SetTimer):
                self.due[action.timer] = self.now + action.delay_s
            elif isinstance(action, CancelTimer):
                self.due.pop(action.timer, None)
        self.actions.extend(actions)
        return actions

    def advance(self, seconds: float) -> list:
        """Let `seconds` pass, firing every timer due meanwhile in order; what they caused."""
        target = self.now + seconds
        caused: list = []
        while True:
            due = sorted((when, timer) for timer, when in self.due.items() if when <= target)
            if not due:
                break
            when, timer = due[0]
            self.now = max(self.now, when)
            del self.due[timer]
            caused += self.feed(TimerFired(timer))
        self.now = target
        return caused

    def message(self, gen: int, message, *blobs) -> list:
        return self.feed(Received(gen, message, tuple(blobs)))

    # --- whole steps ---------------------------------------------------------------

    def spawned(self, gen: int) -> list:
        self.pids[gen] = 1000 + gen
        return self.feed(Spawned(gen, 1000 + gen, f"w{gen}-test"))

    def bring_up(self, gen: int, load_s: float = 0.5, ready: Ready = READY) -> None:
        """Spawn asked for `gen` -> its process -> hello -> (load) -> ready."""
        self.load(gen)
        self.advance(load_s)
        self.message(gen, ready)

    def load(self, gen: int) -> None:
        """Spawn asked for `gen` -> its process -> hello: it loads its model now."""
        assert Spawn(gen) in self.actions, f"generation {gen} was never asked for"
        self.spawned(gen)
        self.message(gen, Hello(protocol=PROTOCOL_VERSION, worker_id=f"w{gen}-test", pid=self.pids[gen]))

    def start(self) -> Driver:
        self.feed(Start())
        self.bring_up(1)
        return self

    def run_job(self, gen: int, job_id: str) -> list:
        """Offer `job_id`; the worker `gen` takes it into its model stage at once (its prepare
        stage took no time): what the offer and the model's start caused."""
        actions = self.feed(JobOffered(job_id))
        return actions + self.model_started(gen, job_id)

    def prepared(self, gen: int, job_id: str, prepare_ms: float = 1.0) -> list:
        return self.message(gen, JobPrepared(job_id=job_id, prepare_ms=prepare_ms))

    def model_started(self, gen: int, job_id: str) -> list:
        return self.message(gen, ModelStarted(job_id=job_id))

    def model_done(self, gen: int, job_id: str, inference_ms: float = 5.0) -> list:
        return self.message(gen, ModelDone(job_id=job_id, inference_ms=inference_ms))

    def succeed(self, gen: int, job_id: str) -> list:
        done = JobSucceeded(job_id=job_id, content_type="image/png", width=1, height=1, inference_ms=5.0)
        return self.message(gen, done, b"png")

    def fail(self, gen: int, job_id: str, code: str = "out_of_memory") -> list:
        return self.message(gen, JobFailed(job_id=job_id, error_code=code, message="test"))

    def exit(self, gen: int, returncode: int) -> list:
        return self.feed(Exited(gen, returncode))

    def measured(self, gen: int, footprint: int | None, free: int | None, error: str | None = None) -> list:
        """The shell's answer to MeasureMemory (RAM figures, as for a CPU worker)."""
        return self.feed(MemoryMeasured(gen, MemoryFigures("ram", footprint, free, "test", error)))

    def heartbeat(self, gen: int) -> list:
        return self.message(gen, Heartbeat())

    def startup_failed(self, gen: int, reason: str, message: str) -> list:
        return self.message(gen, StartupFailed(reason=reason, message=message))

    # --- reading -------------------------------------------------------------------

    def of(self, kind: type, actions: list | None = None) -> list:
        return [a for a in (self.actions if actions is None else actions) if isinstance(a, kind)]

    def logs(self, event: str) -> list[Log]:
        return [a for a in self.actions if isinstance(a, Log) and a.event == event]

    def states(self) -> list[str]:
        return [a.new.value for a in self.of(ReportState)]

    def kills(self) -> list[tuple[int, str]]:
        return [(a.gen, a.reason.value) for a in self.of(Kill)]

    def ended(self, job_id: str):
        (end,) = [a for a in self.of(EndJob) if a.job_id == job_id]
        return end.result

    def spawns(self) -> list[int]:
        return [a.gen for a in self.of(Spawn)]
