"""The shape of GET /jobs/{job_id}, for a job in memory and one known from the spool."""

from __future__ import annotations

from pathlib import Path

import yaml

from supervisor.jobs.job import CallbackState, Job, JobOptions, JobResult
from supervisor.http.jobs_api import describe, rfc3339
from supervisor.delivery.loop import SpooledJob
from supervisor.delivery.spool import SpoolRecord

KEYS = {
    "job_id", "state", "stage", "error_code", "error_message", "created_at", "timings_ms", "callback", "started_at",
    "progress",
}


def test_the_keys_are_those_the_schema_documents():
    spec = yaml.safe_load((Path(__file__).resolve().parents[3] / "supervisor" / "http" / "openapi.yaml").read_text())
    job = spec["components"]["schemas"]["Job"]
    assert KEYS == set(job["required"]) == set(job["properties"])


def test_a_queued_job_has_no_timings_yet():
    job = Job("j1", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=10.0, accepted_at=1_700_000_000.25)
    body = describe(job)
    assert set(body) == KEYS
    assert body["state"] == "queued" and body["created_at"] == "2023-11-14T22:13:20.250Z"
    assert body["timings_ms"] == {"queue": None, "prepare": None, "inference": None, "finish": None, "total": None}
    assert body["stage"] == "queued"
    assert body["callback"] == {"state": "pending", "attempts": 0, "last_status": None}
    assert body["started_at"] is None and body["progress"] is None


def test_a_running_job_tells_when_it_started_and_its_last_step():
    job = Job("j4", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=10.0, accepted_at=1_700_000_000.25)
    job.mark_handed(12.0, "m")
    job.mark_model_started(12.0)
    body = describe(job)
    assert body["state"] == "running" and body["progress"] is None  # no step yet
    assert body["started_at"] == "2023-11-14T22:13:22.250Z"  # the 202 plus its 2 s in the queue
    job.mark_progress(3, 8)
    assert describe(job)["progress"] == {"step": 3, "total": 8}
    job.mark_requeued()  # its worker died: waiting again, nothing of that run is told
    body = describe(job)
    assert body["state"] == "queued" and body["started_at"] is None and body["progress"] is None
    job.mark_handed(20.0, "m")
    job.mark_model_started(20.0)
    job.mark_progress(8, 8)
    job.mark_finished(JobResult(image=b"x", content_type="image/png", inference_ms=5.0), 21.0)
    body = describe(job)  # a finished job keeps its last step and its last run's start
    assert body["progress"] == {"step": 8, "total": 8} and body["started_at"] == "2023-11-14T22:13:30.250Z"


def test_a_failed_job_tells_its_error_and_timings():
    job = Job("j2", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=10.0)
    job.mark_handed(10.5, "m")
    job.mark_model_started(10.5)
    job.mark_finished(JobResult.failure("out_of_memory", "CUDA out of memory", inference_ms=250.4), 11.0)
    job.callback_state, job.callback_attempts, job.callback_last_status = CallbackState.RETRYING, 2, 503
    body = describe(job)
    assert body["state"] == "failed" and body["error_code"] == "out_of_memory"
    assert body["error_message"] == "CUDA out of memory"
    assert body["timings_ms"] == {"queue": 500, "prepare": None, "inference": 250, "finish": None, "total": 1000}
    assert body["stage"] is None
    assert body["callback"] == {"state": "retrying", "attempts": 2, "last_status": 503}


def test_a_job_known_from_the_spool():
    record = SpoolRecord(
        job_id="j3", webhook_id="msg_3", content_type="multipart/form-data; boundary=b", spooled_at=5.0,
        state="cancelled", created_at=1.0, timings_ms={"queue": 3, "inference": None, "total": 4},
        error_code="cancelled", error_message="cancelled on request", started_at=1.003,
    )
    body = describe(SpooledJob(record))
    assert set(body) == KEYS and body["job_id"] == "j3" and body["state"] == "cancelled"
    assert body["created_at"] == rfc3339(1.0) == "1970-01-01T00:00:01.000Z"
    assert body["timings_ms"] == {"queue": 3, "prepare": None, "inference": None, "finish": None, "total": 4}
    assert body["stage"] is None
    assert body["callback"]["state"] == "retrying"
    assert body["started_at"] == "1970-01-01T00:00:01.003Z" and body["progress"] is None
