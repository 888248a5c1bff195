"""The shape of GET /jobs/{job_id}, for a job in memory and one known from the spool."""

from __future__ import annotations

from supervisor.jobs import CallbackState, Job, JobOptions, JobResult
from supervisor.jobs_api import describe, rfc3339
from supervisor.delivery import SpooledJob
from supervisor.spool import SpoolRecord

KEYS = {"job_id", "state", "error_code", "error_message", "created_at", "timings_ms", "callback"}


def test_a_queued_job_has_no_timings_yet():
    job = Job("j1", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=10.0, accepted_at=1_700_000_000.25)
    body = describe(job)
    assert set(body) == KEYS
    assert body["state"] == "queued" and body["created_at"] == "2023-11-14T22:13:20.250Z"
    assert body["timings_ms"] == {"queue": None, "inference": None, "total": None}
    assert body["callback"] == {"state": "pending", "attempts": 0, "last_status": None}


def test_a_failed_job_tells_its_error_and_timings():
    job = Job("j2", "u", "s", "qwen", JobOptions(), b"p", b"g", accepted_mono=10.0)
    job.mark_dispatched(10.5, "m")
    job.mark_finished(JobResult.failure("out_of_memory", "CUDA out of memory", inference_ms=250.4), 11.0)
    job.callback_state, job.callback_attempts, job.callback_last_status = CallbackState.RETRYING, 2, 503
    body = describe(job)
    assert body["state"] == "failed" and body["error_code"] == "out_of_memory"
    assert body["error_message"] == "CUDA out of memory"
    assert body["timings_ms"] == {"queue": 500, "inference": 250, "total": 1000}
    assert body["callback"] == {"state": "retrying", "attempts": 2, "last_status": 503}


def test_a_job_known_from_the_spool():
    record = SpoolRecord(
        job_id="j3", webhook_id="msg_3", content_type="multipart/form-data; boundary=b", spooled_at=5.0,
        state="cancelled", created_at=1.0, timings_ms={"queue": 3, "inference": None, "total": 4},
        error_code="cancelled", error_message="cancelled on request",
    )
    body = describe(SpooledJob(record))
    assert set(body) == KEYS and body["job_id"] == "j3" and body["state"] == "cancelled"
    assert body["created_at"] == rfc3339(1.0) == "1970-01-01T00:00:01.000Z"
    assert body["timings_ms"] == {"queue": 3, "inference": None, "total": 4}
    assert body["callback"]["state"] == "retrying"
