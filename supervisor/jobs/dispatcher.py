"""Moves admitted jobs onto the worker, one at a time, and records how each one ended.

The dispatcher is the only place that ends the job holding the GPU slot, so a job can
neither be ended twice nor forgotten, whatever happens meanwhile (a worker death, a
drain deadline).
"""

from __future__ import annotations

import asyncio
import time

from ipc.jsonlog import EventLog
from supervisor.delivery.callback import CallbackSender
from supervisor.delivery.events import EventSender
from supervisor.jobs.job import Job, JobResult, JobState
from supervisor.metrics.registry import Metrics
from supervisor.worker.reasons import KillReason
from supervisor.jobs.scheduler import Scheduler
from supervisor.worker.shell import WorkerSupervisor, WorkerUnavailable

events = EventLog("supervisor.dispatcher")
CANCELLED = JobResult.failure("cancelled", "cancelled on request (DELETE /jobs)")


class Dispatcher:
    def __init__(
        self,
        scheduler: Scheduler,
        worker: WorkerSupervisor,
        callbacks: CallbackSender,
        metrics: Metrics,
        default_model_version: str | None = None,
        retry_crashed_jobs: bool = False,
        job_events: EventSender | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.worker = worker
        self.callbacks = callbacks
        self.metrics = metrics
        self.default_model_version = default_model_version
        # A job whose worker died under it runs once more on the next worker.
        self.retry_crashed_jobs = retry_crashed_jobs
        # Job events for the orchestrator (events.url), best effort; None: not sent.
        self.job_events = job_events
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._aborted = asyncio.Event()
        self._abort_result: JobResult | None = None

    def wake(self) -> None:
        """A job was admitted."""
        self._idle.clear()
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until no job runs or waits."""
        await self._idle.wait()

    def abort_current(self, result: JobResult, reason: KillReason) -> None:
        """End the job holding the slot with `result`, now, wherever it stands; the node
        takes no job after this (used at a drain deadline, after the queue was emptied).
        `reason`: why its worker is killed (the drain's end, a QUIT)."""
        self._abort_result = result
        self._aborted.set()
        # A job on the worker ends when the worker dies: its future resolves with `result`.
        self.worker.abort(result, "the node is stopping", reason)

    async def run(self) -> None:
        while True:
            job = self.scheduler.current
            if job is None or job.state is not JobState.QUEUED:
                # No await between the check and the wait: a wake() cannot be missed.
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            ready = await self._until_worker_ready()
            if job.finished:
                continue  # cancelled while it waited for a worker; the slot went on
            if not ready:
                assert self._abort_result is not None
                self.complete(job, self._abort_result)
                continue
            if job.cancel_requested:  # asked while its last run ended (a crash, say)
                self.complete(job, CANCELLED)
                continue
            try:
                handover = await self.worker.start_job(job)
            except WorkerUnavailable:
                continue  # never reached the worker: still first in line for the next one
            now = time.monotonic()
            # The version of the worker that runs it (around a recycle, old and new differ).
            job.mark_dispatched(now, handover.model_version or self._model_version())
            if job.attempts == 1:
                self.metrics.job_queue.observe(now - job.accepted_mono)
            events.info(
                "job_dispatched", job_id=job.job_id, attempt=job.attempts, worker_pid=handover.pid,
                model_version=job.model_version, queue_ms=round((now - job.accepted_mono) * 1000, 1),
            )
            if self.job_events is not None:
                self.job_events.started(job)
            result = await handover.outcome
            if job.cancel_requested and result.error_code == "worker_crashed":
                result = CANCELLED  # the cancel was answered 202; the crash only came first
            if self._runs_again(job, result):
                continue
            self.complete(job, result)

    def _runs_again(self, job: Job, result: JobResult) -> bool:
        """A crash that may not be the job's fault gets one more run, where configured.
        (Never a timeout or an out-of-memory: those would most likely happen again.)"""
        if (
            result.error_code != "worker_crashed"
            or not self.retry_crashed_jobs
            or job.attempts > 1
            or self._aborted.is_set()
        ):
            return False
        job.mark_requeued()
        events.warning("job_retrying", job_id=job.job_id, attempt=job.attempts, error=result.error_message)
        return True

    async def _until_worker_ready(self) -> bool:
        """True once the worker can take a job; False if the node aborts meanwhile."""
        if self._aborted.is_set():
            return False
        waiters = {
            asyncio.ensure_future(self.worker.wait_ready()),
            asyncio.ensure_future(self._aborted.wait()),
        }
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return not self._aborted.is_set()

    def complete(self, job: Job, result: JobResult) -> None:
        """Record the end of `job`, free its slot (if it held it) and send its callback."""
        now = time.monotonic()
        if job.model_version is None:  # ended before it reached the worker
            job.model_version = self._model_version()
        job.mark_finished(result, now)
        held_s = now - job.dispatched_mono if job.dispatched_mono is not None else None
        if self.scheduler.current is job:
            self.scheduler.finish(job, held_s if result.ok else None)
        outcome = "succeeded" if result.ok else (result.error_code or "backend_error")
        self.metrics.jobs.labels(outcome).inc()
        self.metrics.job_total.observe(now - job.accepted_mono)
        if result.inference_ms is not None:
            self.metrics.job_inference.observe(result.inference_ms / 1000)
        timings = job.timings_ms()
        if result.ok:
            events.info("job_finished", job_id=job.job_id, state=job.state.value, timings_ms=timings)
        else:
            events.warning(
                "job_finished", job_id=job.job_id, state=job.state.value, timings_ms=timings,
                error_code=result.error_code, error_message=result.error_message,
            )
        self.callbacks.submit(job)
        if self.job_events is not None:
            self.job_events.forget(job)
        if self.scheduler.idle:
            self._idle.set()
        else:
            self._wakeup.set()

    def _model_version(self) -> str | None:
        ready = self.worker.last_ready
        return ready.model_version if ready is not None else self.default_model_version
