"""Moves admitted jobs onto the worker, one at a time, and records how each one ended."""

from __future__ import annotations

import asyncio
import time

from ipc.jsonlog import EventLog
from supervisor.callback import CallbackSender
from supervisor.jobs import Job, JobResult, JobState
from supervisor.metrics import Metrics
from supervisor.scheduler import Scheduler
from supervisor.worker_supervisor import WorkerSupervisor, WorkerUnavailable

events = EventLog("supervisor.dispatcher")


class Dispatcher:
    def __init__(
        self,
        scheduler: Scheduler,
        worker: WorkerSupervisor,
        callbacks: CallbackSender,
        metrics: Metrics,
    ) -> None:
        self.scheduler = scheduler
        self.worker = worker
        self.callbacks = callbacks
        self.metrics = metrics
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def wake(self) -> None:
        """A job was admitted."""
        self._idle.clear()
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until no job runs or waits."""
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            job = self.scheduler.current
            if job is None or job.state is not JobState.QUEUED:
                # No await between the check and the wait: a wake() cannot be missed.
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self.worker.wait_ready()
            if self.scheduler.current is not job or job.state is not JobState.QUEUED:
                continue  # ended meanwhile (drain deadline)
            now = time.monotonic()
            model_version = self.worker.last_ready.model_version if self.worker.last_ready else None
            job.mark_dispatched(now, model_version)
            self.metrics.job_queue.observe(now - job.accepted_mono)
            events.info(
                "job_dispatched", job_id=job.job_id, queue_ms=round((now - job.accepted_mono) * 1000, 1)
            )
            try:
                result = await self.worker.run_job(job)
            except WorkerUnavailable:
                # Never reached the worker: it waits for the next one, first in line.
                job.state, job.dispatched_mono = JobState.QUEUED, None
                continue
            self.complete(job, result)

    def complete(self, job: Job, result: JobResult) -> None:
        """Record the end of `job`, free its slot (if it held it) and send its callback."""
        now = time.monotonic()
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
        if self.scheduler.idle:
            self._idle.set()
        else:
            self._wakeup.set()
