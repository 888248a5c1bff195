"""Moves admitted jobs onto the worker and records how each one ended.

The job holding the GPU slot is handed over first; once it is in its model stage, the job
first in line is handed over too, to be prepared meanwhile (with `queue.max_pending` >= 1).
The slot is freed when a job's model stage is over, while that job still finishes in the
worker, so the next job takes the GPU at once. Each job handed over is followed to its end
by a task of its own. The dispatcher is the only place that ends a job, so a job can
neither be ended twice nor forgotten, whatever happens meanwhile (a worker death, a drain
deadline).
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from ipc.jsonlog import EventLog
from supervisor.delivery.callback import CallbackSender
from supervisor.delivery.events import EventSender
from supervisor.jobs.job import Job, JobResult
from supervisor.metrics.registry import Metrics
from supervisor.worker.reasons import KillReason
from supervisor.jobs.scheduler import Scheduler
from supervisor.tasks import watched
from supervisor.worker.shell import Handover, WorkerSupervisor, WorkerUnavailable

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
        self._followers: dict[Job, asyncio.Task] = {}  # of each job on the worker
        self._handovers: dict[Job, Handover] = {}  # each job on the worker, in any stage, until it ends
        # Called if a job's follower dies of a bug: the node cannot go on (set by the node).
        self.on_fatal: Callable[[str], None] = lambda why: None

    def wake(self) -> None:
        """A job was admitted."""
        self._idle.clear()
        self._wakeup.set()

    async def wait_idle(self) -> None:
        """Until no job runs or waits anywhere: in the queue, in any stage of the worker."""
        await self._idle.wait()

    def abort_current(self, result: JobResult, reason: KillReason) -> None:
        """End every job on the worker and the one holding the slot with `result`, now,
        wherever they stand; the node takes no job after this (used at a drain deadline,
        after the queue was emptied). `reason`: why its worker is killed (the drain's end, a QUIT)."""
        self._abort_result = result
        self._aborted.set()
        # The jobs on the worker end when it dies: their futures resolve with `result`.
        self.worker.abort(result, "the node is stopping", reason)

    async def settled(self, job: Job, timeout_s: float) -> None:
        """Until `job`'s run on the worker is over (it ended, or went back in line), for at
        most `timeout_s`."""
        follower = self._followers.get(job)
        if follower is not None:
            await asyncio.wait({follower}, timeout=timeout_s)

    def model_started(self, job: Job) -> None:
        """`job` entered its model stage (the worker said so): the next one may be prepared."""
        if self.job_events is not None:
            self.job_events.started(job)
        self._wakeup.set()

    async def run(self) -> None:
        while True:
            job = self._next_to_hand()
            if job is None:
                # No await between the check and the wait: a wake cannot be missed.
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            accepting = await self._until_worker_accepts()
            if job is not self._next_to_hand():
                continue  # cancelled, ended or moved while it waited for the worker
            if not accepting:
                assert self._abort_result is not None
                self.complete(job, self._abort_result)
                continue
            if job.cancel_requested:  # asked while its last run ended (a crash, say)
                self.complete(job, CANCELLED)
                continue
            try:
                handover = await self.worker.start_job(job)
            except WorkerUnavailable:
                continue  # never reached the worker: still in its place for the next try
            now = time.monotonic()
            # The version of the worker that runs it (around a recycle, old and new differ).
            job.mark_handed(now, handover.model_version or self._model_version())
            self._handovers[job] = handover
            events.info(
                "job_dispatched", job_id=job.job_id, attempt=job.attempts, worker_pid=handover.pid,
                model_version=job.model_version, queue_ms=round((now - job.accepted_mono) * 1000, 1),
                holds_slot=self.scheduler.current is job,
            )
            follower = watched(self._follow(job, handover), f"job-{job.job_id}", lambda why: self.on_fatal(why))
            self._followers[job] = follower  # held: the loop keeps only a weak reference
            follower.add_done_callback(lambda _, job=job: self._followers.pop(job, None))

    def _next_to_hand(self) -> Job | None:
        """The slot's job, until it is on the worker; then, once it is in its model stage,
        the job first in line, to be prepared meanwhile."""
        slot = self.scheduler.current
        if slot is None:
            return None
        if not slot.handed:
            return None if slot.finished else slot
        waiting = self.scheduler.next_pending
        if slot.stage == "model" and waiting is not None and not waiting.handed and not waiting.finished:
            return waiting
        return None

    async def _follow(self, job: Job, handover: Handover) -> None:
        """One job on the worker, to its end: the slot goes on when its model stage is over."""
        await asyncio.wait({handover.model_done, handover.outcome}, return_when=asyncio.FIRST_COMPLETED)
        if handover.model_done.done() and self.scheduler.current is job:
            self.scheduler.finish(job, handover.model_done.result() / 1000)
            self._wakeup.set()
        result = await handover.outcome
        self._handovers.pop(job, None)
        if job.cancel_requested and result.error_code == "worker_crashed":
            result = CANCELLED  # the cancel was answered 202; the crash only came first
        if self._runs_again(job, result):
            if self.scheduler.current is not job and not self.scheduler.waiting(job):
                # It was finishing: back ahead of the queue, and ahead of the slot's job if
                # that one came later and the same crash ended its run too.
                current = self.scheduler.current
                crashed_too = current is not None and (
                    not current.handed or (other := self._handovers.get(current)) is not None and other.outcome.done()
                )
                self.scheduler.requeue(job, displace=crashed_too)
            self._wakeup.set()
            return
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

    async def _until_worker_accepts(self) -> bool:
        """True once the worker would take a job; False if the node aborts meanwhile."""
        if self._aborted.is_set():
            return False
        waiters = {
            asyncio.ensure_future(self.worker.wait_accepting()),
            asyncio.ensure_future(self._aborted.wait()),
        }
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return not self._aborted.is_set()

    def complete(self, job: Job, result: JobResult) -> None:
        """Record the end of `job`, free its place (the slot, or in line) and send its callback."""
        now = time.monotonic()
        if job.model_version is None:  # ended before it reached the worker
            job.model_version = self._model_version()
        job.mark_finished(result, now)
        self._handovers.pop(job, None)
        if self.scheduler.current is job:
            self.scheduler.finish(job)
        else:
            self.scheduler.remove_pending(job)  # (a job prepared early that failed there, say)
        outcome = "succeeded" if result.ok else (result.error_code or "backend_error")
        self.metrics.jobs.labels(outcome).inc()
        self.metrics.job_total.observe(now - job.accepted_mono)
        if result.inference_ms is not None:
            self.metrics.job_inference.observe(result.inference_ms / 1000)
        if result.prepare_ms is not None:
            self.metrics.job_prepare.observe(result.prepare_ms / 1000)
        if result.finish_ms is not None:
            self.metrics.job_finish.observe(result.finish_ms / 1000)
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
        if self.scheduler.idle and not self._handovers:
            self._idle.set()
        else:
            self._wakeup.set()

    def _model_version(self) -> str | None:
        ready = self.worker.last_ready
        return ready.model_version if ready is not None else self.default_model_version
