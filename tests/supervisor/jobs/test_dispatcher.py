"""The dispatcher: jobs go to the worker one at a time, and each ends exactly once.

The worker is played by the test (the part of WorkerSupervisor the dispatcher uses); the
real one is exercised through the node in tests/integration/."""

from __future__ import annotations

import asyncio
import time

import pytest

from ipc.messages import Ready
from supervisor.jobs.dispatcher import Dispatcher
from supervisor.jobs.job import Job, JobOptions, JobResult, JobState
from supervisor.metrics.registry import Metrics
from supervisor.worker.reasons import KillReason
from supervisor.jobs.scheduler import Scheduler
from supervisor.worker.shell import Handover, WorkerUnavailable

OK = JobResult(image=b"png", content_type="image/png", inference_ms=12.0)
CRASHED = JobResult.failure("worker_crashed", "the worker process died during the job: killed by SIGSEGV")


class PlayedWorker:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.handed: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self.refusals = 0  # how many hand-overs to refuse (the worker died just before)
        self.aborts: list[tuple[JobResult, KillReason]] = []
        self.running: asyncio.Future | None = None
        self.last_ready: Ready | None = None
        self.runs_version: str | None = None  # what the worker the job goes to loaded, when not last_ready's

    async def wait_ready(self) -> None:
        await self.ready.wait()

    async def start_job(self, job: Job) -> Handover:
        if self.refusals:
            self.refusals -= 1
            self.ready.clear()
            raise WorkerUnavailable("the worker could not be reached")
        self.running = asyncio.get_running_loop().create_future()
        self.handed.put_nowait((job, self.running))
        version = self.runs_version or (self.last_ready.model_version if self.last_ready else None)
        return Handover(self.running, 4242, version)

    def abort(self, result: JobResult, why: str, reason: KillReason) -> None:
        self.aborts.append((result, reason))
        if self.running is not None and not self.running.done():
            self.running.set_result(result)  # as a killed worker's job ends

    async def next_job(self) -> tuple[Job, asyncio.Future]:
        return await asyncio.wait_for(self.handed.get(), 10)


class Callbacks:
    def __init__(self) -> None:
        self.sent: list[Job] = []

    def submit(self, job: Job) -> None:
        self.sent.append(job)


@pytest.fixture
async def setup():
    worker, callbacks, scheduler = PlayedWorker(), Callbacks(), Scheduler(max_pending=5)
    dispatcher = Dispatcher(
        scheduler, worker, callbacks, Metrics(), default_model_version="configured-1"  # type: ignore[arg-type]
    )
    task = asyncio.create_task(dispatcher.run())
    yield dispatcher, worker, callbacks, scheduler
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def admit(dispatcher: Dispatcher, scheduler: Scheduler, job_id: str) -> Job:
    job = Job(job_id, "u", "s", "qwen", JobOptions(seed=1, output_format="png"), b"p", b"g", time.monotonic())
    assert scheduler.admit(job) is not None
    dispatcher.wake()
    return job


async def test_a_job_runs_and_ends_once_with_its_callback(setup):
    dispatcher, worker, callbacks, scheduler = setup
    worker.last_ready = Ready(backend="reference", model_version="reference-1", device="cpu", load_time_s=0.1)
    job = admit(dispatcher, scheduler, "j1")
    handed, future = await worker.next_job()
    assert handed is job and job.state is JobState.RUNNING and job.attempts == 1
    assert job.model_version == "reference-1"  # of the worker that runs it
    future.set_result(OK)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.state is JobState.SUCCEEDED and callbacks.sent == [job] and scheduler.current is None
    assert dispatcher.metrics.jobs.labels("succeeded")._value.get() == 1
    assert job.person_image is None  # the inputs go once it has ended


async def test_a_job_reports_the_version_of_the_worker_that_ran_it_not_the_latest(setup):
    dispatcher, worker, callbacks, scheduler = setup
    worker.last_ready = Ready(backend="reference", model_version="v2", device="cpu", load_time_s=0.1)
    worker.runs_version = "v1"  # handed to the old worker, the new one being ready beside it
    job = admit(dispatcher, scheduler, "old-worker")
    _, future = await worker.next_job()
    future.set_result(OK)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.model_version == "v1"


async def test_jobs_go_one_at_a_time_in_their_order(setup):
    dispatcher, worker, callbacks, scheduler = setup
    first, second = admit(dispatcher, scheduler, "first"), admit(dispatcher, scheduler, "second")
    handed, future = await worker.next_job()
    assert handed is first and worker.handed.empty()  # the second waits for the slot
    future.set_result(OK)
    handed, future = await worker.next_job()
    assert handed is second and second.state is JobState.RUNNING
    future.set_result(JobResult.failure("out_of_memory", "CUDA out of memory"))
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert [j.job_id for j in callbacks.sent] == ["first", "second"] and second.state is JobState.FAILED


async def test_a_job_the_worker_could_not_take_waits_first_in_line_for_the_next_worker(setup):
    dispatcher, worker, callbacks, scheduler = setup
    worker.refusals = 1
    job = admit(dispatcher, scheduler, "j1")
    while worker.ready.is_set():
        await asyncio.sleep(0.01)  # refused once; now the dispatcher waits for a ready worker
    assert job.state is JobState.QUEUED and job.attempts == 0 and scheduler.current is job
    worker.ready.set()
    handed, future = await worker.next_job()
    assert handed is job
    future.set_result(OK)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.state is JobState.SUCCEEDED and job.attempts == 1


async def test_a_crash_fails_the_job_unless_it_may_run_once_more(setup):
    dispatcher, worker, callbacks, scheduler = setup
    job = admit(dispatcher, scheduler, "no-retry")
    (await worker.next_job())[1].set_result(CRASHED)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.state is JobState.FAILED and job.result.error_code == "worker_crashed"

    dispatcher.retry_crashed_jobs = True
    job = admit(dispatcher, scheduler, "retried")
    (await worker.next_job())[1].set_result(CRASHED)
    handed, future = await worker.next_job()  # once more, on the next worker
    assert handed is job and job.attempts == 2
    future.set_result(CRASHED)  # twice: it fails for good
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.state is JobState.FAILED and job.attempts == 2 and callbacks.sent[-1] is job


async def test_a_cancel_answered_before_a_crash_ends_the_job_cancelled(setup):
    dispatcher, worker, callbacks, scheduler = setup
    job = admit(dispatcher, scheduler, "j1")
    _, future = await worker.next_job()
    job.cancel_requested = True  # DELETE /jobs said 202
    future.set_result(CRASHED)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.state is JobState.CANCELLED and job.result.error_code == "cancelled"


async def test_at_the_drain_deadline_a_running_job_ends_with_the_nodes_result(setup):
    dispatcher, worker, callbacks, scheduler = setup
    job = admit(dispatcher, scheduler, "j1")
    await worker.next_job()
    stopped = JobResult.failure("shutdown", "the node stopped before the job could finish")
    dispatcher.abort_current(stopped, KillReason.DRAIN_DEADLINE)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert worker.aborts == [(stopped, KillReason.DRAIN_DEADLINE)]
    assert job.result == stopped and job.state is JobState.FAILED


async def test_a_job_waiting_for_a_worker_ends_at_once_when_the_node_aborts(setup):
    dispatcher, worker, callbacks, scheduler = setup
    worker.ready.clear()  # the worker is restarting
    job = admit(dispatcher, scheduler, "j1")
    stopped = JobResult.failure("shutdown", "SIGQUIT")
    dispatcher.abort_current(stopped, KillReason.QUIT)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert job.result == stopped and worker.handed.empty()
    assert job.model_version == "configured-1"  # no worker reported one: the configured version
