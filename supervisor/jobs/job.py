"""What the node knows about each accepted job, and for how long it remembers it."""

from __future__ import annotations

import dataclasses
import enum
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Callable, Literal

import msgspec
from msgspec import Meta


class JobOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """The job's `config` field. Unknown keys are rejected so typos are caught."""

    seed: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    steps: Annotated[int, Meta(ge=1, le=100)] | None = None
    prompt: Annotated[str, Meta(max_length=2000)] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class CallbackState(str, enum.Enum):
    PENDING = "pending"
    DELIVERING = "delivering"
    DELIVERED = "delivered"
    RETRYING = "retrying"
    UNDELIVERABLE = "undeliverable"


@dataclass(frozen=True, slots=True)
class JobResult:
    """How a run ended, as the worker (or the worker's death) told it."""

    error_code: str | None = None
    error_message: str | None = None
    image: bytes | None = None
    content_type: str | None = None
    inference_ms: float | None = None
    # The worker's stages before and after the model (0 for a backend without them).
    prepare_ms: float | None = None
    finish_ms: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None

    @classmethod
    def failure(
        cls, code: str, message: str, inference_ms: float | None = None,
        prepare_ms: float | None = None, finish_ms: float | None = None,
    ) -> JobResult:
        return cls(error_code=code, error_message=message, inference_ms=inference_ms, prepare_ms=prepare_ms,
                   finish_ms=finish_ms)


def rfc3339(unix_s: float) -> str:
    """Unix seconds as the API writes times: RFC 3339, UTC, milliseconds."""
    return datetime.fromtimestamp(unix_s, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def progress_body(progress: tuple[int, int] | None) -> dict[str, int] | None:
    """A job's progress as the API writes it: {"step", "total"}, or null."""
    return {"step": progress[0], "total": progress[1]} if progress is not None else None


def _ms(start: float | None, end: float | None) -> int | None:
    return None if start is None or end is None else round((end - start) * 1000)


@dataclass(eq=False, slots=True)
class Job:
    job_id: str
    user_id: str
    session_id: str
    provider: str
    # Resolved options: seed and output_format always set at acceptance.
    options: JobOptions
    person_image: bytes | None
    garment_image: bytes | None
    accepted_mono: float
    # images.output_size when it was accepted: `person` or `model` (a reload changes later jobs).
    output_size: Literal["person", "model"] = "person"
    accepted_at: float = field(default_factory=time.time)
    # One id for every delivery attempt of this job's result (at-least-once delivery).
    webhook_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    state: JobState = JobState.QUEUED
    # When its first run entered the model stage: the end of its queue time.
    model_started_mono: float | None = None
    # When its current (or last) run was handed to a worker; and how far that run got:
    # (step, total) of the model's own loop, None until its first step.
    started_mono: float | None = None
    progress: tuple[int, int] | None = None
    # Its current run's way through the worker: handed over (prepare), prepared and waiting
    # (`prepare_ms` known), in the model, past it (finish). None while not on a worker.
    stage: Literal["queued", "prepare", "model", "finish"] | None = "queued"
    prepare_ms: float | None = None
    model_done_mono: float | None = None  # when its current run's model stage ended
    finished_mono: float | None = None
    model_version: str | None = None
    result: JobResult | None = None
    callback_state: CallbackState = CallbackState.PENDING
    callback_attempts: int = 0
    callback_last_status: int | None = None
    # How many times it was handed to a worker (2: retried after a worker crash).
    attempts: int = 0
    # DELETE /jobs was answered 202: whatever happens next, the job ends `cancelled`.
    cancel_requested: bool = False

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def handed(self) -> bool:
        """Its current run is on a worker (in any stage)."""
        return self.started_mono is not None and not self.finished

    @property
    def past_model(self) -> bool:
        """Its current run's model stage is over: it only finishes (no cancel from now on)."""
        return self.model_done_mono is not None

    def mark_handed(self, now: float, model_version: str | None) -> None:
        """Handed to a worker: its prepare stage begins. Still `queued` until its model stage."""
        self.attempts += 1
        self.started_mono, self.progress, self.stage = now, None, "prepare"
        self.prepare_ms = self.model_done_mono = None
        self.model_version = model_version

    def mark_prepared(self, prepare_ms: float) -> None:
        """Decoded, waiting for the model stage: `queued` (and prepared)."""
        self.prepare_ms, self.stage = prepare_ms, "queued"

    def mark_model_started(self, now: float) -> None:
        self.state, self.stage = JobState.RUNNING, "model"
        # The queue time ends when its first run enters the model, also for a job run again.
        if self.model_started_mono is None:
            self.model_started_mono = now

    def mark_model_done(self, now: float, inference_ms: float) -> None:
        self.stage, self.model_done_mono = "finish", now

    def mark_progress(self, step: int, total: int) -> None:
        self.progress = (step, total)

    @property
    def started_at(self) -> float | None:
        """Unix time its current (or last) run began on a worker; None until then."""
        if self.started_mono is None:
            return None
        return self.accepted_at + (self.started_mono - self.accepted_mono)

    def mark_requeued(self) -> None:
        """Back to waiting for a worker, inputs kept (its worker died under it)."""
        self.state, self.stage = JobState.QUEUED, "queued"
        self.started_mono = self.progress = None
        self.prepare_ms = self.model_done_mono = None

    def mark_finished(self, result: JobResult, now: float) -> None:
        if result.ok:
            self.state = JobState.SUCCEEDED
        elif result.error_code == "cancelled":
            self.state = JobState.CANCELLED
        else:
            self.state = JobState.FAILED
        self.result = result
        self.finished_mono = now
        self.stage = None
        # The inputs are not needed any more; the output stays until delivered.
        self.person_image = self.garment_image = None

    def release_output(self) -> None:
        if self.result is not None and self.result.image is not None:
            self.result = dataclasses.replace(self.result, image=None)

    def timings_ms(self) -> dict[str, int | None]:
        """queue: 202 -> its model stage began (or it ended without); prepare and finish: the
        worker's stages before and after the model; inference: the model only; total: 202 ->
        result back."""
        queue_end = self.model_started_mono if self.model_started_mono is not None else self.finished_mono
        result = self.result
        inference = result.inference_ms if result is not None else None
        prepare = result.prepare_ms if result is not None and result.prepare_ms is not None else self.prepare_ms
        finish = result.finish_ms if result is not None else None
        return {
            "queue": _ms(self.accepted_mono, queue_end),
            "prepare": None if prepare is None else round(prepare),
            "inference": None if inference is None else round(inference),
            "finish": None if finish is None else round(finish),
            "total": _ms(self.accepted_mono, self.finished_mono),
        }


class JobStore:
    """Accepted jobs by id, kept `retention_s` after their 202 and never while in flight."""

    def __init__(self, retention_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retention_s = retention_s
        self._clock = clock
        self._jobs: OrderedDict[str, Job] = OrderedDict()

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: str) -> bool:
        self._evict()
        return job_id in self._jobs

    def get(self, job_id: str) -> Job | None:
        self._evict()
        return self._jobs.get(job_id)

    def add(self, job: Job) -> None:
        self._evict()
        self._jobs[job.job_id] = job

    def _evict(self) -> None:
        # Insertion order is acceptance order, so expired jobs sit at the front.
        horizon = self._clock() - self.retention_s
        while self._jobs:
            job = next(iter(self._jobs.values()))
            if job.accepted_mono > horizon or not job.finished:
                return
            self._jobs.popitem(last=False)
