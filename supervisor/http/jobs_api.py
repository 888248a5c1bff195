"""`GET /jobs/{job_id}` and `DELETE /jobs/{job_id}`: what the node knows of a job, and
cancelling one that has not finished.

A job is known while the job store remembers it (`jobs.retention_s`) or while its result
waits in the spool, also one that ran before a restart (then known from its spool entry).
"""

from __future__ import annotations

from typing import Any

from ipc.jsonlog import EventLog
from supervisor.delivery.callback import CallbackSender
from supervisor.jobs.dispatcher import CANCELLED, Dispatcher
from supervisor.http.errors import ApiError
from supervisor.jobs.job import Job, JobStore, progress_body, rfc3339
from supervisor.delivery.loop import SpooledJob
from supervisor.jobs.scheduler import Scheduler
from supervisor.worker.shell import WorkerSupervisor

events = EventLog("supervisor.jobs")
# How long DELETE waits for the worker's answer to a cancel before the model stage (it comes
# at once): the answer then tells `cancelled`, not `queued`.
PROMPT_CANCEL_S = 2.0


def describe(job: Job | SpooledJob) -> dict[str, Any]:
    """The contract's shape of one job."""
    if isinstance(job, SpooledJob):
        record = job.record
        state, error_code, error_message = record.state, record.error_code, record.error_message
        created_at, timings = record.created_at, dict(record.timings_ms)
        started_at, progress = record.started_at, None  # how far it got is not kept
    else:
        result = job.result
        state = job.state.value
        error_code = result.error_code if result is not None else None
        error_message = result.error_message if result is not None else None
        created_at, timings = job.accepted_at, job.timings_ms()
        started_at, progress = job.started_at, job.progress
    return {
        "job_id": job.record.job_id if isinstance(job, SpooledJob) else job.job_id,
        "state": state,
        "error_code": error_code,
        "error_message": error_message,
        "created_at": rfc3339(created_at),
        "timings_ms": {key: timings.get(key) for key in ("queue", "prepare", "inference", "finish", "total")},
        "stage": None if isinstance(job, SpooledJob) else job.stage,
        "started_at": rfc3339(started_at) if started_at is not None else None,
        "progress": progress_body(progress),
        "callback": {
            "state": job.callback_state.value,
            "attempts": job.callback_attempts,
            "last_status": job.callback_last_status,
        },
    }


class JobsApi:
    def __init__(
        self,
        jobs: JobStore,
        callbacks: CallbackSender,
        scheduler: Scheduler,
        dispatcher: Dispatcher,
        worker: WorkerSupervisor,
    ) -> None:
        self.jobs = jobs
        self.callbacks = callbacks
        self.scheduler = scheduler
        self.dispatcher = dispatcher
        self.worker = worker

    def find(self, job_id: str) -> Job | SpooledJob:
        job = self.jobs.get(job_id) or self.callbacks.pending_job(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"job {job_id} is not known to this node")
        return job

    async def cancel(self, job_id: str) -> Job:
        """End a queued job now, or have the worker stop one in its prepare or model stage at
        its backend's next step; either way the callback says `cancelled`. 409 once it is past
        its model stage or has finished."""
        job = self.find(job_id)
        if isinstance(job, SpooledJob) or job.finished:
            state = job.record.state if isinstance(job, SpooledJob) else job.state.value
            raise ApiError(409, "not_cancellable", f"job {job_id} has already finished ({state})")
        if job.past_model:
            raise ApiError(409, "not_cancellable", f"job {job_id} is past its model stage (finishing)")
        job.cancel_requested = True  # never run again, whatever ends its current run
        if not job.handed and self.scheduler.remove_pending(job):
            events.info("job_cancelled", job_id=job_id, was="queued")
            self.dispatcher.complete(job, CANCELLED)
        elif await self.worker.cancel(job_id):
            # In its prepare or model stage: the worker ends it with its own `cancelled`; before
            # its model stage at once (whatever a decode is doing), so the answer can say so.
            events.info("job_cancel_requested", job_id=job_id, stage=job.stage)
            if job.stage != "model":
                await self.dispatcher.settled(job, PROMPT_CANCEL_S)
        elif self.scheduler.current is job and not job.handed:
            # Holds the slot but never reached the worker (it waits for a ready one).
            events.info("job_cancelled", job_id=job_id, was="waiting for the worker")
            self.dispatcher.complete(job, CANCELLED)
        # Otherwise its worker died this very moment: the dispatcher ends it `cancelled`.
        return job
