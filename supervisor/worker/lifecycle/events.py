"""The worker lifecycle's vocabulary: the events it takes and the actions it asks for.

Plain frozen data, so a test can write a whole life as a list of events and read back the
actions. Every event and action that concerns one worker names its generation (`gen`): the
number of the spawn, unique for the life of the node. Messages, jobs, timers and kills are
tied to the generation they belong to, so nothing of one worker is ever taken for another's.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ipc.messages import Message
from supervisor.config import WorkerConfig
from supervisor.jobs.job import JobResult
from supervisor.worker.overlap import GiB, MemoryFigures, OverlapMode, OverlapResult
from supervisor.worker.reasons import KillReason, RestartReason
from supervisor.worker.state import WorkerState

# How long a worker asked to exit (recycle, stop) has before it is killed.
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class Limits:
    """The worker settings the lifecycle's rules read (from `worker.*`)."""

    startup_timeout_s: float = 600.0
    inference_timeout_s: float = 600.0
    heartbeat_interval_s: float = 1.0
    heartbeat_timeout_s: float = 30.0
    max_backoff_s: float = 60.0
    healthy_after_s: float = 60.0
    max_restarts: int = 10
    restart_window_s: float = 600.0
    stop_grace_s: float = STOP_GRACE_S
    overlap: OverlapMode = OverlapMode.AUTO
    overlap_margin_bytes: int = 2 * GiB
    stage_timeout_s: float = 120.0  # a job's prepare and finish stages, each

    @classmethod
    def of(cls, worker: WorkerConfig) -> Limits:
        return cls(
            worker.startup_timeout_s, worker.inference_timeout_s, worker.heartbeat_interval_s,
            worker.heartbeat_timeout_s, worker.max_backoff_s, worker.healthy_after_s,
            worker.max_restarts, worker.restart_window_s, STOP_GRACE_S, OverlapMode(worker.overlap),
            worker.overlap_margin_bytes, worker.stage_timeout_s,
        )


class TimerKind(str, enum.Enum):
    STARTUP = "startup"  # the worker must be ready by then
    WATCHDOG = "watchdog"  # the next look at its heartbeat and its job's time
    RETIRE = "retire"  # a worker asked to exit must have exited by then
    BACKOFF = "backoff"  # the next spawn after a crash


class Timer(NamedTuple):
    kind: TimerKind
    gen: int = 0  # 0: not one worker's (the backoff)


# --- events in ------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Begin supervising: spawn the first worker."""


@dataclass(frozen=True)
class Spawned:
    gen: int
    pid: int
    worker_id: str


@dataclass(frozen=True)
class SpawnFailed:
    gen: int
    error: str


@dataclass(frozen=True)
class Received:
    """A message from the worker of generation `gen`, decoded, with its raw frames."""

    gen: int
    message: Message
    blobs: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Undecodable:
    """Frames from the worker that are not a valid message."""

    gen: int
    error: str


@dataclass(frozen=True)
class SendFailed:
    """A job could not be handed to the worker (its socket is gone)."""

    gen: int
    job_id: str
    error: str


@dataclass(frozen=True)
class Exited:
    gen: int
    returncode: int  # negative: killed by that signal


@dataclass(frozen=True)
class TimerFired:
    timer: Timer


@dataclass(frozen=True)
class JobOffered:
    """The dispatcher wants to hand this job to the worker now."""

    job_id: str


@dataclass(frozen=True)
class CancelAsked:
    job_id: str


@dataclass(frozen=True)
class RecycleAsked:
    why: str


@dataclass(frozen=True)
class AbortAsked:
    """End the worker now; every job it holds ends with `result`."""

    result: JobResult
    why: str
    reason: KillReason


@dataclass(frozen=True)
class StopAsked:
    """The node stops: no restart from now on. With `grace_s`, also end the worker (an
    idle one is asked to exit and given that long); without, let it finish what it does."""

    grace_s: float | None = None


@dataclass(frozen=True)
class Reconfigured:
    limits: Limits


@dataclass(frozen=True)
class MemoryMeasured:
    """The figures MeasureMemory asked for (`auto` overlap decides on them)."""

    gen: int
    figures: MemoryFigures


# --- actions out ----------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start a worker process for generation `gen`, with the settings in force now."""

    gen: int


@dataclass(frozen=True)
class Kill:
    """SIGKILL the worker's process group."""

    gen: int
    reason: KillReason


@dataclass(frozen=True)
class Send:
    gen: int
    message: Message


@dataclass(frozen=True)
class SendJob:
    """Hand the job (its RunJob and images) to the worker; report SendFailed if it cannot."""

    gen: int
    job_id: str


@dataclass(frozen=True)
class EndJob:
    """The job the worker held is over: its result, or how its worker failed it."""

    job_id: str
    result: JobResult


@dataclass(frozen=True)
class ReportProgress:
    """The job a worker holds reached `step` of `total` (its model's own loop)."""

    job_id: str
    step: int
    total: int


@dataclass(frozen=True)
class ReportStage:
    """A job the worker holds moved on: `prepared` (decoded in `ms`, waiting for the model),
    `model_started`, or `model_done` (the model stage took `ms`; the GPU slot is free)."""

    job_id: str
    stage: str
    ms: float = 0.0


@dataclass(frozen=True)
class RefuseJob:
    """The job was not handed over: it is still the caller's."""

    job_id: str
    why: str


@dataclass(frozen=True)
class SetTimer:
    """Fire TimerFired(timer) in `delay_s` seconds, replacing one already set."""

    timer: Timer
    delay_s: float


@dataclass(frozen=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True)
class ReportState:
    old: WorkerState
    new: WorkerState
    why: str


@dataclass(frozen=True)
class ReportReady:
    """A worker loaded its model: what it runs (backend, model version, device)."""

    gen: int
    ready: Message


@dataclass(frozen=True)
class CountRestart:
    reason: RestartReason


@dataclass(frozen=True)
class MeasureMemory:
    """Measure the worker's memory footprint and the free memory beside it (on `device`,
    the one it reported); report MemoryMeasured."""

    gen: int
    pid: int
    device: str


@dataclass(frozen=True)
class CountOverlap:
    result: OverlapResult


@dataclass(frozen=True)
class GiveUp:
    """A crash loop: the node cannot go on (it drains and exits 3)."""

    why: str


@dataclass(frozen=True)
class Log:
    level: str  # debug, info, warning, error
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


Event = (
    Start | Spawned | SpawnFailed | Received | Undecodable | SendFailed | Exited | TimerFired
    | JobOffered | CancelAsked | RecycleAsked | AbortAsked | StopAsked | Reconfigured | MemoryMeasured
)
Action = (
    Spawn | Kill | Send | SendJob | EndJob | ReportProgress | ReportStage | RefuseJob | SetTimer | CancelTimer
    | ReportState
    | ReportReady | CountRestart | MeasureMemory | CountOverlap | GiveUp | Log
)


class Outbox:
    """The actions one event causes, in order; and the timers set and not yet fired or
    cancelled (so a worker's exit cancels exactly those it has)."""

    def __init__(self) -> None:
        self.actions: list[Action] = []
        self.timers: set[Timer] = set()

    def take(self) -> list[Action]:
        taken, self.actions = self.actions, []
        return taken

    def emit(self, action: Action) -> None:
        self.actions.append(action)

    def log(self, level: str, event: str, **fields: Any) -> None:
        self.emit(Log(level, event, fields))

    def set_timer(self, timer: Timer, delay_s: float) -> None:
        self.timers.add(timer)
        self.emit(SetTimer(timer, delay_s))

    def cancel_timer(self, timer: Timer) -> None:
        if timer in self.timers:
            self.timers.discard(timer)
            self.emit(CancelTimer(timer))

    def cancel_timers_of(self, gen: int) -> None:
        for kind in (TimerKind.STARTUP, TimerKind.WATCHDOG, TimerKind.RETIRE):
            self.cancel_timer(Timer(kind, gen))


@functools.cache
def handler_name(prefix: str, kind: type) -> str:
    """The core's method for an event or a worker's message: `on_stop_asked` for StopAsked,
    `got_job_failed` for JobFailed. The table of rules is the set of such methods; a new
    event or message is one struct and one method."""
    return prefix + re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()
