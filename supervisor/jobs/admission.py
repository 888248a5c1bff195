"""Turning a valid submission into an accepted job, or refusing it (409, 429, 503).

`admit` is synchronous: the duplicate check, the busy check and the insertion happen
without yielding to the event loop, so concurrent requests cannot both win.
"""

from __future__ import annotations

import secrets
import time
from typing import Callable

import msgspec

from ipc.jsonlog import EventLog
from supervisor.config import Config
from supervisor.http.errors import ApiError
from supervisor.http.images import ImageHeader
from supervisor.jobs.job import Job, JobStore
from supervisor.metrics.registry import Metrics
from supervisor.jobs.scheduler import Scheduler
from supervisor.http.tryon_form import Submission

events = EventLog("supervisor.admission")

# Retry-After (seconds) for a node that cannot take jobs, by what it is doing.
NOT_READY_RETRY_AFTER = {"loading": 5, "restarting": 5, "failed": 60, "draining": 60}


class Admission:
    def __init__(
        self,
        config: Config,
        jobs: JobStore,
        scheduler: Scheduler,
        metrics: Metrics,
        readiness: Callable[[], str],
        on_admitted: Callable[[], None],
        in_spool: Callable[[str], bool] = lambda job_id: False,
    ) -> None:
        self.config = config
        self.jobs = jobs
        self.scheduler = scheduler
        self.metrics = metrics
        self.readiness = readiness
        self.on_admitted = on_admitted
        # A result still waiting in the spool keeps its job_id known, also after a restart.
        self.in_spool = in_spool

    def require_ready(self) -> None:
        status = self.readiness()
        if status != "ok":
            raise ApiError(
                503,
                "not_ready",
                f"the node cannot take jobs now ({status})",
                headers={"Retry-After": str(NOT_READY_RETRY_AFTER.get(status, 5))},
            )

    def admit(self, submission: Submission) -> tuple[Job, int]:
        # Re-checked: the worker may have died or a drain begun while the body streamed in.
        self.require_ready()
        if submission.job_id in self.jobs or self.in_spool(submission.job_id):
            raise ApiError(409, "duplicate_job", f"job {submission.job_id} is already known to this node")
        options = submission.options
        job = Job(
            job_id=submission.job_id,
            user_id=submission.user_id,
            session_id=submission.session_id,
            provider=submission.provider,
            # Resolved now, so the run is reproducible from the logs.
            options=msgspec.structs.replace(
                options,
                seed=secrets.randbits(32) if options.seed is None else options.seed,
                output_format=options.output_format or self.config.images.output_format,
            ),
            person_image=submission.person_image,
            garment_image=submission.garment_image,
            accepted_mono=time.monotonic(),
            output_size=self.config.images.output_size,
        )
        position = self.scheduler.admit(job)
        if position is None:
            self.metrics.jobs.labels("rejected_busy").inc()
            retry_after = self.scheduler.retry_after_s()
            events.info(
                "job_rejected_busy", job_id=job.job_id,
                current_job_id=self.scheduler.current.job_id if self.scheduler.current else None,
                queue_length=self.scheduler.queue_length, retry_after_s=retry_after,
            )
            raise ApiError(
                429,
                "gpu_busy",
                "the GPU is busy and the queue is full",
                headers={"Retry-After": str(retry_after)},
            )
        self.jobs.add(job)
        self.metrics.jobs.labels("accepted").inc()
        events.info(
            "job_accepted", job_id=job.job_id, user_id=job.user_id, session_id=job.session_id,
            queue_position=position, seed=job.options.seed, steps=job.options.steps,
            output_format=job.options.output_format, output_size=job.output_size,
            person_image=_describe(submission.person_header, submission.person_image),
            garment_image=_describe(submission.garment_header, submission.garment_image),
        )
        self.on_admitted()
        return job, position


def _describe(header: ImageHeader, data: bytes) -> dict:
    """An upload as logged: its size as stored, and the EXIF orientation the worker will
    apply (5 to 8: a person sees it height x width; the worker logs the upright size)."""
    return {"format": header.format, "width": header.width, "height": header.height,
            "orientation": header.orientation, "bytes": len(data)}
