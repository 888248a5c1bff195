"""WorkerSupervisor against real processes that misbehave at the protocol level
(tests/support/fake_worker.py), over its real ZeroMQ socket."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from ipc.transport import make_runtime_dir, remove_runtime_dir
from supervisor import config
from supervisor.jobs.job import Job, JobOptions
from supervisor.metrics.registry import Metrics
from supervisor.worker.state import WorkerState
from supervisor.worker.shell import WorkerSupervisor
from tests.support.waiting import until

FAKE = (sys.executable, str(Path(__file__).resolve().parents[2] / "support" / "fake_worker.py"))
CONFIG = """
node_id: n
auth: {tokens: ["0123456789abcdef"]}
callback: {url: "http://127.0.0.1:9/c", token: t}
worker: {backend: "tests.x:Fake", max_backoff_s: 0.1}
"""


def job(job_id: str = "j1") -> Job:
    return Job(job_id, "u", "s", "qwen", JobOptions(seed=1, output_format="png"), b"p", b"g", time.monotonic())


@pytest.fixture
async def supervisor_for(tmp_path):
    made: list[WorkerSupervisor] = []
    runtime = make_runtime_dir()

    async def make(scenario: str | None, command=FAKE) -> WorkerSupervisor:
        text = CONFIG + (f"model: {{custom: {{scenario: {scenario}}}}}\n" if scenario else "")
        loaded = config.LoadedConfig(config.parse(text, {}), tmp_path / "c.yaml")
        worker = WorkerSupervisor(loaded, Metrics(), runtime, command=command)
        fatal: list[str] = []
        worker.on_fatal = fatal.append
        worker.fatal = fatal  # type: ignore[attr-defined]
        await worker.start()
        made.append(worker)
        return worker

    yield make
    for worker in made:
        await worker.stop()
    remove_runtime_dir(runtime)



async def test_an_undecodable_result_fails_the_job_and_restarts_the_worker(supervisor_for):
    worker = await supervisor_for("garbage_result")
    await asyncio.wait_for(worker.wait_ready(), 30)
    first_pid = worker.pid
    result = await asyncio.wait_for((await worker.start_job(job())).outcome, 30)
    assert result.error_code == "backend_error"
    assert "could not be handled" in result.error_message
    await asyncio.wait_for(worker.wait_ready(), 30)  # a new worker took its place
    assert worker.pid != first_pid and worker.restarts == 1
    assert worker.fatal == []


async def test_a_worker_exiting_mid_job_fails_it_with_worker_crashed(supervisor_for):
    worker = await supervisor_for("exit_during_job")
    await asyncio.wait_for(worker.wait_ready(), 30)
    result = await asyncio.wait_for((await worker.start_job(job())).outcome, 30)
    assert result.error_code == "worker_crashed"
    assert "status 3" in result.error_message


async def test_a_result_for_another_job_is_ignored(supervisor_for):
    worker = await supervisor_for("wrong_job_id")
    await asyncio.wait_for(worker.wait_ready(), 30)
    result = await asyncio.wait_for((await worker.start_job(job("mine"))).outcome, 30)
    assert result.ok and result.image == b"png"
    assert worker.state is WorkerState.READY


async def test_a_spawn_that_fails_is_retried_and_never_ends_supervision(supervisor_for):
    worker = await supervisor_for(None, command=("/nonexistent/python", "-m", "gpu_worker"))
    await until(lambda: worker.core.last_generation >= 3)  # it keeps trying (backoff 0.1 s)
    await until(lambda: worker.core.last_generation >= 4)  # and goes on: supervision did not end
    assert worker.fatal == []
    assert worker.state is WorkerState.RESTARTING and worker.pid is None
