from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from supervisor.jobs.job import Job, JobOptions, JobResult, JobState, JobStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(job_id: str, at: float) -> Job:
    return Job(job_id, "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=at)


def test_timings_follow_the_job():
    j = job("a", 10.0)
    assert j.timings_ms() == {"queue": None, "prepare": None, "inference": None, "finish": None, "total": None}
    j.mark_handed(10.25, "m-1")
    j.mark_model_started(10.25)
    assert j.state is JobState.RUNNING and j.model_version == "m-1"
    j.mark_finished(JobResult(image=b"out", content_type="image/png", inference_ms=600.4), 11.0)
    assert j.state is JobState.SUCCEEDED
    assert j.timings_ms() == {"queue": 250, "prepare": None, "inference": 600, "finish": None, "total": 1000}
    assert j.person_image is None and j.garment_image is None  # inputs released
    j.release_output()
    assert j.result.image is None and j.result.content_type == "image/png"


def test_a_job_that_never_started_counts_its_wait_as_queue_time():
    j = job("a", 10.0)
    j.mark_finished(JobResult.failure("shutdown", "stopped"), 12.0)
    assert j.state is JobState.FAILED
    assert j.timings_ms() == {"queue": 2000, "prepare": None, "inference": None, "finish": None, "total": 2000}


def test_a_job_through_its_stages():
    j = job("a", 10.0)
    j.mark_handed(10.5, "m-1")
    assert (j.state, j.stage, j.handed) == (JobState.QUEUED, "prepare", True)
    j.mark_prepared(120.4)
    assert (j.state, j.stage) == (JobState.QUEUED, "queued")  # prepared, waiting for the model
    assert j.timings_ms()["prepare"] == 120
    j.mark_model_started(12.0)
    assert (j.state, j.stage, j.past_model) == (JobState.RUNNING, "model", False)
    j.mark_model_done(14.0, 2000.0)
    assert (j.stage, j.past_model) == ("finish", True)
    j.mark_finished(JobResult(image=b"o", content_type="image/png", inference_ms=2000.0, prepare_ms=120.4,
                              finish_ms=300.6), 14.5)
    # The queue runs until the model stage (prepared and waiting counts as queued).
    assert j.timings_ms() == {"queue": 2000, "prepare": 120, "inference": 2000, "finish": 301, "total": 4500}
    assert j.stage is None and not j.handed


def test_a_job_run_again_keeps_its_first_queue_time():
    j = job("a", 10.0)
    j.mark_handed(10.5, "m")
    j.mark_model_started(11.0)
    j.mark_model_done(12.0, 1000.0)
    j.mark_requeued()  # its worker died while it finished
    assert (j.state, j.stage, j.handed, j.past_model) == (JobState.QUEUED, "queued", False, False)
    j.mark_handed(20.0, "m")
    j.mark_model_started(21.0)
    assert j.attempts == 2 and j.model_started_mono == 11.0


def test_cancelled_result_gives_the_cancelled_state():
    j = job("a", 0.0)
    j.mark_finished(JobResult.failure("cancelled", "by request"), 1.0)
    assert j.state is JobState.CANCELLED


def test_store_remembers_for_the_retention_time_after_the_202():
    clock = Clock()
    store = JobStore(retention_s=60, clock=clock)
    a = job("a", clock.now)
    store.add(a)
    a.mark_finished(JobResult(), clock.now)
    clock.now += 59
    assert "a" in store
    clock.now += 2
    assert "a" not in store and store.get("a") is None


def test_store_never_forgets_a_job_in_flight():
    clock = Clock()
    store = JobStore(retention_s=1, clock=clock)
    running = job("running", clock.now)
    store.add(running)
    clock.now += 100
    assert "running" in store
    running.mark_finished(JobResult(), clock.now)
    assert "running" not in store


def test_webhook_id_is_made_once_per_job():
    a, b = job("a", 0.0), job("b", 0.0)
    assert a.webhook_id != b.webhook_id and a.webhook_id.startswith("msg_")


def test_the_job_model_and_the_lifecycle_pull_in_no_web_framework_nor_image_library():
    code = (
        "import sys, supervisor.jobs.job, supervisor.worker.lifecycle.core\n"
        "print([m for m in ('sanic', 'PIL', 'torch') if m in sys.modules])"
    )
    repo = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"
