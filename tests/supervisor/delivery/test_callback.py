"""Callback delivery against a real HTTP server on 127.0.0.1. No waiting for the quick
retries: the `sender` fixture's clock skips the delivery loop's waits and records them."""

from __future__ import annotations

import asyncio
import base64
import time

import pytest

from supervisor import __version__
from supervisor.delivery.callback import CallbackSender
from supervisor.delivery.callback_body import build_body, spool_record
from supervisor.config import CallbackConfig, SpoolConfig
from supervisor.delivery.loop import Clock
from supervisor.jobs.job import CallbackState, Job, JobOptions, JobResult
from supervisor.metrics.registry import Metrics
from supervisor.delivery.signing import parse_secret, signature
from supervisor.delivery.spool import Spool
from tests.supervisor.delivery.test_spool import put
from tests.support.receiver import Reply
from tests.support.waiting import until


def finished_job(job_id: str, result: JobResult) -> Job:
    job = Job(job_id, "user-9", "sess-9", "qwen", JobOptions(seed=1), b"p", b"g", accepted_mono=100.0)
    job.mark_handed(100.5, "reference-1")
    job.mark_model_started(100.5)
    job.mark_finished(result, 102.0)
    return job


OK = JobResult(image=b"\x89PNG-bytes", content_type="image/png", inference_ms=1234.6)


class SkippingClock(Clock):
    """Time that passes only when the delivery loop waits for a due attempt: the wait is
    recorded in `sleeps` and skipped."""

    def __init__(self, sleeps: list[float]) -> None:
        self.t = time.time()
        self.sleeps = sleeps

    def now(self) -> float:
        return self.t

    async def wait(self, wake: asyncio.Event, timeout: float | None) -> None:
        if timeout is None or wake.is_set():
            await wake.wait()
            return
        self.sleeps.append(timeout)
        self.t += timeout


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
    s = CallbackSender(
        CallbackConfig(url=receiver.url, token="cb-token", timeout_s=5, max_retries=3),
        "node-7", Metrics(), spool, clock=SkippingClock(sleeps), jitter=lambda: 0.5,
    )
    await s.start()
    yield s
    await s.close(5)


async def test_success_on_the_first_attempt(sender, receiver, sleeps):
    job = finished_job("cb-ok", OK)
    await sender.deliver(job)
    (call,) = receiver.for_job("cb-ok")
    assert call.headers["X-Internal-Auth"] == "cb-token"
    assert call.headers["User-Agent"] == f"gpu-server/{__version__}"
    assert call.fields == {
        "job_id": "cb-ok", "user_id": "user-9", "session_id": "sess-9", "provider": "qwen", "node_id": "node-7",
        "model_version": "reference-1", "status": "succeeded", "inference_time_ms": "1235",
        "queue_time_ms": "500", "total_time_ms": "2000", "prepare_time_ms": "0", "finish_time_ms": "0",
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
    delivery = sender.deliveries.get("cb-spent")
    assert delivery is not None and delivery.body is None  # read back from disk when due
    assert 29 < delivery.due - sender.deliveries.clock.now() <= 30
    receiver.script.clear()


async def test_connection_refused_is_retried(sleeps, spool):
    sender = CallbackSender(
        CallbackConfig(url="http://127.0.0.1:9/cb", token="t", timeout_s=2, max_retries=2),
        "n", Metrics(), spool, clock=SkippingClock(sleeps), jitter=lambda: 0.5,
    )
    await sender.start()
    job = finished_job("cb-refused", OK)
    await sender.deliver(job)
    await sender.close(1)
    assert job.callback_attempts == 3 and sleeps == [1.0, 2.0]
    assert job.callback_state is CallbackState.RETRYING and spool.holds("cb-refused")


# --- durability: spool, redelivery, signatures -----------------------------------------


class EverySecondLater(Clock):
    """A clock a second later at every look, so every attempt is signed at another second."""

    def __init__(self) -> None:
        self.seconds = iter(range(1_700_000_000, 1_700_100_000))

    def now(self) -> float:
        return float(next(self.seconds))


SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
QUICK_SPOOL = SpoolConfig(retry_initial_s=0.05, retry_max_s=0.1, max_age_s=3600)


async def make_sender(url: str, spool: Spool, spool_config: SpoolConfig = QUICK_SPOOL, clock=None, **config):
    # No quick retries (max_retries 0): the spool's redelivery, in real time, does the rest.
    sender = CallbackSender(
        CallbackConfig(url=url, token="t", timeout_s=5, **{"max_retries": 0, **config}),
        "node-7", Metrics(), spool, spool_config, clock=clock, jitter=lambda: 0.5,
    )
    await sender.start()
    return sender


async def test_the_result_is_on_disk_before_the_first_attempt(receiver, spool):
    seen_on_disk = []
    receiver.answer_for["cb-disk"] = lambda: (seen_on_disk.append(spool.holds("cb-disk")), Reply(200))[1]
    sender = await make_sender(receiver.url, spool)
    await sender.deliver(finished_job("cb-disk", OK))
    await sender.close(1)
    assert seen_on_disk == [True] and not spool.holds("cb-disk")  # removed after the 2xx


async def test_the_spool_redelivers_with_the_same_id_and_body_each_attempt_signed_anew(receiver, spool):
    answers = iter([Reply(503), Reply(503), Reply(503), Reply(200)])
    receiver.answer_for["cb-redeliver"] = lambda: next(answers)
    sender = await make_sender(receiver.url, spool, clock=EverySecondLater(), signing_secret=SECRET)
    job = finished_job("cb-redeliver", JobResult.failure("invalid_input", "broken"))
    await sender.deliver(job)
    await until(lambda: job.callback_state is CallbackState.DELIVERED, 10)
    await sender.close(1)
    calls = receiver.for_job("cb-redeliver")
    assert [c.answered for c in calls] == [503, 503, 503, 200]
    assert len({c.headers["webhook-id"] for c in calls}) == 1 and len({c.raw for c in calls}) == 1
    assert len({c.headers["webhook-timestamp"] for c in calls}) == 4  # re-signed each time
    for call in calls:
        key = parse_secret(SECRET)
        assert call.headers["webhook-signature"] == signature(
            key, call.headers["webhook-id"], int(call.headers["webhook-timestamp"]), call.raw
        )
    assert job.callback_attempts == 4 and len(spool) == 0


async def test_a_spooled_result_is_retried_by_the_next_process_with_its_webhook_id(receiver, spool):
    receiver.answer_for["cb-restart"] = lambda: Reply(503)
    first = await make_sender(receiver.url, spool, SpoolConfig(retry_initial_s=3600))
    job = finished_job("cb-restart", OK)
    await first.deliver(job)
    await first.close(1)
    assert spool.holds("cb-restart")

    receiver.answer_for["cb-restart"] = lambda: Reply(200)
    reopened = Spool(spool.root)
    reopened.open()
    second = await make_sender(receiver.url, reopened)
    pending = second.pending_job("cb-restart")
    assert pending is not None and pending.record.state == "succeeded"
    await until(lambda: not reopened.holds("cb-restart"), 10)
    await second.close(1)
    first_call, last_call = receiver.for_job("cb-restart")
    assert last_call.answered == 200 and last_call.raw == first_call.raw
    assert last_call.headers["webhook-id"] == first_call.headers["webhook-id"] == job.webhook_id


async def test_a_result_past_the_age_limit_is_removed_and_counted(receiver, spool):
    receiver.answer_for["cb-old"] = lambda: Reply(503)
    sender = await make_sender(receiver.url, spool, SpoolConfig(retry_initial_s=0.05, retry_max_s=0.05, max_age_s=0.3))
    job = finished_job("cb-old", OK)
    await sender.deliver(job)
    await until(lambda: not spool.holds("cb-old"), 10)
    await sender.close(1)
    assert job.callback_state is CallbackState.UNDELIVERABLE
    assert sender.metrics.spool_expired._value.get() == 1
    assert sender.metrics.callback_attempts.labels("failure")._value.get() == 1  # the last attempt
    assert list(spool.dead.iterdir()) == []  # expired is removed, not dead-lettered


async def test_a_final_4xx_from_the_spool_dead_letters_it(receiver, spool):
    answers = iter([Reply(502), Reply(410)])
    receiver.answer_for["cb-gone"] = lambda: next(answers)
    sender = await make_sender(receiver.url, spool)
    job = finished_job("cb-gone", OK)
    await sender.deliver(job)
    await until(lambda: job.callback_state is CallbackState.UNDELIVERABLE, 10)
    await sender.close(1)
    assert [p.name.split("~")[0] for p in spool.dead.iterdir()] == ["cb-gone"]
    assert len(receiver.for_job("cb-gone")) == 2 and len(spool) == 0


async def test_a_spool_write_failure_still_delivers_from_memory(receiver, tmp_path):
    broken = Spool(tmp_path / "gone")  # never opened: its folders do not exist
    sender = await make_sender(receiver.url, broken)
    job = finished_job("cb-nodisk", OK)
    await sender.deliver(job)
    await sender.close(1)
    assert job.callback_state is CallbackState.DELIVERED and len(receiver.for_job("cb-nodisk")) == 1



async def test_a_spooled_body_found_damaged_is_quarantined_not_sent(receiver, spool):
    job = finished_job("cb-damaged", OK)
    body = await build_body(job, "node-7")
    name = put(spool, spool_record(job, body, time.time()), body.data)
    path = spool.root / name
    data = path.read_bytes()
    path.write_bytes(data[:-40] + bytes([data[-40] ^ 1]) + data[-39:])
    reopened = Spool(spool.root)
    reopened.open()  # the header is fine: pending
    sender = await make_sender(receiver.url, reopened)
    await until(lambda: not reopened.holds("cb-damaged"), 10)
    await sender.close(1)
    assert receiver.for_job("cb-damaged") == []
    assert [p.name for p in reopened.quarantine_dir.iterdir()] == [name]


async def test_a_reloaded_config_applies_from_the_next_attempt(receiver, spool):
    answers = iter([Reply(503), Reply(200)])
    receiver.answer_for["cb-reload"] = lambda: next(answers)
    sender = await make_sender(receiver.url, spool, SpoolConfig(retry_initial_s=3600))
    job = finished_job("cb-reload", JobResult.failure("invalid_input", "broken"))
    await sender.deliver(job)  # one attempt, 503: waits an hour in the spool
    new = CallbackConfig(url=receiver.url, token="rotated-token", timeout_s=5, max_retries=0, signing_secret=SECRET)
    sender.reconfigure(new, QUICK_SPOOL)
    sender.deliveries.schedule(sender.deliveries.get("cb-reload"), 0)  # due now
    await until(lambda: job.callback_state is CallbackState.DELIVERED, 10)
    await sender.close(1)
    first, second = receiver.for_job("cb-reload")
    assert first.headers["X-Internal-Auth"] == "t" and "webhook-signature" not in first.headers
    assert second.headers["X-Internal-Auth"] == "rotated-token" and "webhook-signature" in second.headers


async def test_an_entry_deleted_by_hand_is_given_up(receiver, spool):
    receiver.answer_for["cb-deleted"] = lambda: Reply(503)
    sender = await make_sender(receiver.url, spool, SpoolConfig(retry_initial_s=3600))
    await sender.deliver(finished_job("cb-deleted", OK))
    ((name, _),) = spool.records()
    (spool.root / name).unlink()
    sender.deliveries.schedule(sender.deliveries.get("cb-deleted"), 0)
    await until(lambda: sender.deliveries.get("cb-deleted") is None, 10)
    await sender.close(1)
    assert not spool.holds("cb-deleted") and len(receiver.for_job("cb-deleted")) == 1


async def test_a_rescan_sends_a_result_replayed_while_the_sender_runs(receiver, spool):
    sender = await make_sender(receiver.url, spool)
    job = finished_job("cb-replayed", OK)
    body = await build_body(job, "node-7")
    Spool(spool.root).write_file(spool_record(job, body, time.time()), body.data)  # another process's file
    assert await sender.rescan("test") == 1
    await until(lambda: not spool.holds("cb-replayed"), 10)
    assert await sender.rescan("test") == 0  # delivered and removed: nothing more to take
    await sender.close(1)
    (call,) = receiver.for_job("cb-replayed")
    assert call.answered == 200 and list(spool.root.glob("*.cb")) == []


async def test_the_sender_rescans_by_itself(receiver, spool):
    sender = await make_sender(receiver.url, spool)
    sender._rescan_task.cancel()
    sender._rescan_task = asyncio.get_running_loop().create_task(sender._rescan_every(0.01))
    job = finished_job("cb-noticed", OK)
    body = await build_body(job, "node-7")
    Spool(spool.root).write_file(spool_record(job, body, time.time()), body.data)
    await until(lambda: len(receiver.for_job("cb-noticed")) == 1, 10)
    await sender.close(1)
