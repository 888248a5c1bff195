"""Callback delivery against a real HTTP server on 127.0.0.1 (no waiting: sleeps are recorded)."""

from __future__ import annotations

import email.utils
import time

import pytest

from supervisor.callback import CallbackSender, backoff_s, is_retryable, parse_retry_after
from supervisor.config import CallbackConfig
from supervisor.jobs import CallbackState, Job, JobResult
from supervisor.metrics import Metrics
from supervisor.spool import Spool
from supervisor.tryon_form import JobOptions
from tests.support.receiver import Reply


def finished_job(job_id: str, result: JobResult) -> Job:
    job = Job(job_id, "user-9", "sess-9", "qwen", JobOptions(seed=1), b"p", b"g", accepted_mono=100.0)
    job.mark_dispatched(100.5, "reference-1")
    job.mark_finished(result, 102.0)
    return job


OK = JobResult(image=b"\x89PNG-bytes", content_type="image/png", inference_ms=1234.6)


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool")
    s.open()
    return s


@pytest.fixture
async def sender(receiver, sleeps, spool):
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    s = CallbackSender(
        CallbackConfig(url=receiver.url, token="cb-token", timeout_s=5, max_retries=3),
        "node-7", Metrics(), spool, sleep=fake_sleep, jitter=lambda: 0.5,
    )
    await s.start()
    yield s
    await s.close(5)


async def test_success_on_the_first_attempt(sender, receiver, sleeps):
    job = finished_job("cb-ok", OK)
    await sender.deliver(job)
    (call,) = receiver.for_job("cb-ok")
    assert call.headers["X-Internal-Auth"] == "cb-token"
    assert call.fields == {
        "job_id": "cb-ok", "user_id": "user-9", "session_id": "sess-9", "provider": "qwen", "node_id": "node-7",
        "model_version": "reference-1", "status": "succeeded", "inference_time_ms": "1235",
        "queue_time_ms": "500", "total_time_ms": "2000",
    }
    assert call.files["output_image"] == ("cb-ok.png", "image/png", b"\x89PNG-bytes")
    assert job.callback_state is CallbackState.DELIVERED and job.callback_attempts == 1
    assert job.callback_last_status == 200
    assert job.result.image is None  # released after delivery
    assert sleeps == []


async def test_failure_callbacks_are_multipart_with_the_error(sender, receiver):
    await sender.deliver(finished_job("cb-fail", JobResult.failure("invalid_input", "person_image: broken")))
    (call,) = receiver.for_job("cb-fail")
    assert call.content_type.startswith("multipart/form-data")
    assert call.fields["status"] == "failed"
    assert call.fields["error_code"] == "invalid_input"
    assert call.fields["error_message"] == "person_image: broken"
    assert call.fields["inference_time_ms"] == "0"
    assert call.files == {}


async def test_retries_with_backoff_then_succeeds(sender, receiver, sleeps):
    receiver.script.extend([Reply(500), Reply(502), Reply(408)])
    job = finished_job("cb-retry", OK)
    await sender.deliver(job)
    calls = receiver.for_job("cb-retry")
    assert [c.answered for c in calls] == [500, 502, 408, 200]
    assert len({c.raw for c in calls}) == 1  # every attempt sent the very same bytes
    assert sleeps == [1.0, 2.0, 4.0]  # jitter 0.5 -> exactly the base delays
    assert job.callback_state is CallbackState.DELIVERED and job.callback_attempts == 4


async def test_retry_after_is_honoured_on_429_and_503(sender, receiver, sleeps):
    receiver.script.extend([Reply(429, {"Retry-After": "7"}), Reply(503, {"Retry-After": "9999"})])
    await sender.deliver(finished_job("cb-ra", OK))
    assert sleeps == [7.0, 300.0]  # the second capped at 300 s


async def test_a_4xx_is_final_and_not_retried(sender, receiver, sleeps):
    receiver.script.append(Reply(400))
    job = finished_job("cb-400", OK)
    await sender.deliver(job)
    assert len(receiver.for_job("cb-400")) == 1
    assert job.callback_state is CallbackState.UNDELIVERABLE and sleeps == []


async def test_after_one_plus_max_retries_attempts_the_spool_takes_over(sender, receiver, sleeps, spool):
    receiver.script.extend([Reply(503)] * 10)
    job = finished_job("cb-spent", OK)
    await sender.deliver(job)
    calls = receiver.for_job("cb-spent")
    assert len(calls) == 4
    assert job.callback_state is CallbackState.RETRYING
    # Still on disk, byte for byte what was sent, and due spool.retry_initial_s (30 s) later.
    ((name, record),) = spool.records()
    assert record.job_id == "cb-spent" and record.webhook_id == job.webhook_id
    assert spool.read(name) == calls[0].raw
    delivery = sender.redelivery.get("cb-spent")
    assert delivery is not None and delivery.body is None  # read back from disk when due
    assert 29 < delivery.due - time.time() <= 30
    receiver.script.clear()


async def test_connection_refused_is_retried(sleeps, spool):
    async def fake_sleep(seconds):
        sleeps.append(seconds)

    sender = CallbackSender(
        CallbackConfig(url="http://127.0.0.1:9/cb", token="t", timeout_s=2, max_retries=2),
        "n", Metrics(), spool, sleep=fake_sleep, jitter=lambda: 0.5,
    )
    await sender.start()
    job = finished_job("cb-refused", OK)
    await sender.deliver(job)
    await sender.close(1)
    assert job.callback_attempts == 3 and sleeps == [1.0, 2.0]
    assert job.callback_state is CallbackState.RETRYING and spool.holds("cb-refused")


def test_backoff_doubles_with_jitter_between_half_and_one_and_a_half():
    assert [backoff_s(n, 1.0, 0.5) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert backoff_s(1, 1.0, 0.0) == 0.5
    assert backoff_s(3, 1.0, 0.999) < 6.0


@pytest.mark.parametrize("status, retry", [(408, True), (429, True), (500, True), (503, True), (599, True),
                                           (400, False), (401, False), (404, False), (413, False), (422, False)])
def test_which_statuses_are_retried(status, retry):
    assert is_retryable(status) is retry


def test_parse_retry_after():
    assert parse_retry_after("12") == 12.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after("100000") == 300.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after(date, now=now) <= 31
