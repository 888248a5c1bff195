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
from tests.support.waiting import until

OK = JobResult(image=b"png", content_type="image/png", inference_ms=12.0)
CRASHED = JobResult.failure("worker_crashed", "the worker process died during the job: killed by SIGSEGV")


class PlayedWorker:
    """What WorkerSupervisor does for the dispatcher: hand-overs, and each job's model stage
    (its start and end, as the real shell reports them from the worker's messages)."""

    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.handed: asyncio.Queue[tuple[Job, asyncio.Future]] = asyncio.Queue()
        self.refusals = 0  # how many hand-overs to refuse (the worker died just before)
        self.aborts: list[tuple[JobResult, KillReason]] = []
        self.outcomes: dict[str, asyncio.Future] = {}
        self.model_dones: dict[str, asyncio.Future] = {}
        self.last_ready: Ready | None = None
        self.runs_version: str | None = None  # what the worker the job goes to loaded, when not last_ready's
        self.dispatcher: Dispatcher | None = None

    async def wait_accepting(self) -> None:
        await self.ready.wait()

    async def start_job(self, job: Job) -> Handover:
        if self.refusals:
            self.refusals -= 1
            self.ready.clear()
            raise WorkerUnavailable("the worker could not be reached")
        loop = asyncio.get_running_loop()
        outcome, model_done = loop.create_future(), loop.create_future()
        self.outcomes[job.job_id], self.model_dones[job.job_id] = outcome, model_done
        self.handed.put_nowait((job, outcome))
        version = self.runs_version or (self.last_ready.model_version if self.last_ready else None)
        return Handover(outcome, 4242, version, model_done)

    def model_started(self, job: Job) -> None:
        job.mark_model_started(time.monotonic())
        assert self.dispatcher is not None
        self.dispatcher.model_started(job)

    def model_done(self, job: Job, inference_ms: float = 12.0) -> None:
        job.mark_model_done(time.monotonic(), inference_ms)
        self.model_dones[job.job_id].set_result(inference_ms)

    def abort(self, result: JobResult, why: str, reason: KillReason) -> None:
        self.aborts.append((result, reason))
        for outcome in self.outcomes.values():
            if not outcome.done():
                outcome.set_result(result)  # as a killed worker's jobs end

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
    worker.dispatcher = dispatcher
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
    assert handed is job and job.state is JobState.QUEUED and job.stage == "prepare" and job.attempts == 1
    assert job.model_version == "reference-1"  # of the worker that runs it
    worker.model_started(job)
    assert job.state is JobState.RUNNING and job.stage == "model"
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


async def test_jobs_go_one_at_a_time_in_their_order_when_none_reaches_the_model(setup):
    dispatcher, worker, callbacks, scheduler = setup
    first, second = admit(dispatcher, scheduler, "first"), admit(dispatcher, scheduler, "second")
    handed, future = await worker.next_job()
    assert handed is first and worker.handed.empty()  # the second waits for the slot
    future.set_result(OK)
    handed, future = await worker.next_job()
    assert handed is second and second.stage == "prepare"
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


# --- the slot is the model stage --------------------------------------------------------------


async def test_the_next_job_is_prepared_while_the_first_is_in_the_model_and_takes_the_slot_at_its_end(setup):
    dispatcher, worker, callbacks, scheduler = setup
    first, second, third = (admit(dispatcher, scheduler, name) for name in ("first", "second", "third"))
    handed, first_outcome = await worker.next_job()
    assert handed is first and worker.handed.empty()  # "first" is being prepared: nobody else yet
    worker.model_started(first)
    handed, second_outcome = await worker.next_job()
    assert handed is second and scheduler.current is first and scheduler.waiting(second)  # prepared early, in line
    assert worker.handed.empty()  # "third" waits: one job before the model at a time
    worker.model_done(first, 2000.0)
    await until(lambda: scheduler.current is not first)
    assert scheduler.current is second and first.stage == "finish" and not first.finished  # the slot went on
    assert scheduler.retry_after_s() == 2  # from the model stage's time
    worker.model_started(second)
    handed, _ = await worker.next_job()
    assert handed is third
    first_outcome.set_result(OK)  # "first" finished after the slot had moved on
    await until(lambda: first.finished)
    assert first.state is JobState.SUCCEEDED and callbacks.sent == [first] and not dispatcher._idle.is_set()
    worker.model_done(second)
    second_outcome.set_result(OK)
    worker.model_started(third)
    worker.model_done(third)
    worker.outcomes["third"].set_result(OK)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)
    assert [j.job_id for j in callbacks.sent] == ["first", "second", "third"] and scheduler.idle


async def test_the_node_is_idle_only_once_the_last_finishing_job_has_ended(setup):
    dispatcher, worker, callbacks, scheduler = setup
    job = admit(dispatcher, scheduler, "j")
    _, outcome = await worker.next_job()
    worker.model_started(job)
    worker.model_done(job)
    await until(lambda: scheduler.idle)
    assert not dispatcher._idle.is_set()  # finishing: a drain still waits
    outcome.set_result(OK)
    await asyncio.wait_for(dispatcher.wait_idle(), 10)


async def test_crashed_jobs_in_several_stages_go_back_in_admission_order_ahead_of_the_queue(setup):
    dispatcher, worker, callbacks, scheduler = setup
    dispatcher.retry_crashed_jobs = True
    a, b, c = (admit(dispatcher, scheduler, name) for name in ("a", "b", "c"))
    await worker.next_job()
    worker.model_started(a)
    await worker.next_job()  # "b", prepared early
    worker.model_done(a)
    await until(lambda: scheduler.current is b)
    worker.model_started(b)
    await worker.next_job()  # "c", prepared early
    worker.ready.clear()  # the worker dies with "a" finishing, "b" in the model, "c" prepared
    for outcome in worker.outcomes.values():
        outcome.set_result(CRASHED)
    await until(lambda: not c.handed and not a.handed and not b.handed)
    assert scheduler.current is a and list(scheduler._pending) == [b, c]
    assert all(j.state is JobState.QUEUED and not j.handed for j in (a, b, c))
    worker.ready.set()
    handed, _ = await worker.next_job()
    assert handed is a and a.attempts == 2 and not callbacks.sent
