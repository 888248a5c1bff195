"""Progress and job events through the real node, worker and receivers (reference backend):
GET /jobs and /gpu/status rising while a long job runs; the events in order, one per
interval, signed; an events receiver that hangs, then one that refuses, changing nothing
about the job, its timings or its callback."""

from __future__ import annotations

import asyncio
import base64
import signal
import time
from datetime import datetime

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from standardwebhooks import Webhook

from tests.support.client import start_long_job, submit, tryon_form
from tests.support.events_receiver import EventsReceiver
from tests.support.node import TOKEN, NodeProcess, free_port

SECRET = "whsec_" + base64.b64encode(b"progress-events-secret-01234567").decode()
INTERVAL_S = 0.3
LONG_STEPS = 100  # tests/support/images.LONG_JOB_CONFIG


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def metric(node: NodeProcess, kind: str, result: str) -> float:
    code, text = node.get("/metrics")
    assert code == 200
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "gpu_server_events"]
    (sample,) = [s for s in family.samples if s.name == "gpu_server_events_total"
                 and s.labels == {"type": kind, "result": result}]
    return sample.value


# --- a receiver that answers: pull and push while a long job runs -----------------------


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver, events_receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("progress"), receiver.url, {
        "callback": {"signing_secret": SECRET},
        "events": {"url": events_receiver.url, "token": "events-token-for-tests", "min_interval_s": INTERVAL_S},
    }).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


@pytest.fixture(scope="module")
def polled(node, receiver):
    """A long job, polled on GET /jobs and GET /gpu/status every 50 ms until it ended."""

    async def run() -> list[tuple[dict, dict]]:
        import aiohttp

        samples = []
        async with aiohttp.ClientSession() as http:
            await start_long_job(http, node, "long-progress")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                code, job = node.get("/jobs/long-progress", token=TOKEN)
                samples.append((job, node.gpu_status()))
                if job["state"] not in ("queued", "running"):  # (queued: its ModelStarted on its way)
                    break
                await asyncio.sleep(0.05)
            await receiver.await_callback("long-progress")
        return samples

    return asyncio.run(run())


def test_progress_rises_while_the_job_runs_and_stays_at_its_last_step(node, polled):
    running = [(job["progress"], status) for job, status in polled if job["state"] == "running"]
    steps = [p["step"] for p, _ in running if p is not None]
    assert steps == sorted(steps) and len(set(steps)) >= 2, steps  # rising, seen at several steps
    assert {p["total"] for p, _ in running if p is not None} == {LONG_STEPS}
    for job_progress, status in running:  # /gpu/status tells the same job's progress
        if status["current_job_id"] == "long-progress" and status["current_job_progress"] is not None:
            assert status["current_job_progress"]["total"] == LONG_STEPS
    assert any(status["current_job_progress"] for _, status in running)

    code, job = node.get("/jobs/long-progress", token=TOKEN)
    assert job["state"] == "succeeded"
    assert job["progress"] == {"step": LONG_STEPS, "total": LONG_STEPS}  # the last step is never lost
    created, started = parse(job["created_at"]), parse(job["started_at"])
    # Started when handed to the worker; its queue time runs on to its model stage, through
    # its prepare stage.
    timings = job["timings_ms"]
    handed_after = started - created
    assert handed_after <= timings["queue"] / 1000 + 0.002
    assert timings["queue"] / 1000 - handed_after >= timings["prepare"] / 1000 - 0.002
    assert node.gpu_status()["current_job_progress"] is None  # no job runs now


def test_events_come_in_order_one_per_interval_signed(node, polled, events_receiver):
    received = events_receiver.for_job("long-progress")
    started, *progress = received
    assert started.body["type"] == "job.started" and (started.body["step"], started.body["total"]) == (None, None)
    code, job = node.get("/jobs/long-progress", token=TOKEN)
    assert started.body["at"] == job["started_at"]
    assert len(progress) >= 2 and {e.body["type"] for e in progress} == {"job.progress"}
    steps = [e.body["step"] for e in progress]
    assert steps == sorted(set(steps)) and {e.body["total"] for e in progress} == {LONG_STEPS}
    times = [parse(e.body["at"]) for e in progress]
    assert all(b - a >= INTERVAL_S - 0.002 for a, b in zip(times, times[1:])), times  # ms rounding
    for event in received:
        assert event.body["user_id"] == "user-1" and event.body["session_id"] == "session-1"
        assert event.body["node_id"] == "test-node"
        assert event.headers["X-Internal-Auth"] == "events-token-for-tests"
        Webhook(SECRET).verify(event.raw, event.headers)
    assert len({e.headers["webhook-id"] for e in received}) == len(received)
    # Every event the receiver got was counted as sent; none failed.
    assert metric(node, "job.started", "sent") == 1
    assert metric(node, "job.progress", "sent") == len(progress)
    assert metric(node, "job.started", "failed") == metric(node, "job.progress", "failed") == 0


# --- receivers that hang, then refuse --------------------------------------------------------


@pytest.fixture(scope="module")
def hanging():
    rx = EventsReceiver(hang=True).start()
    yield rx
    rx.stop()


@pytest.fixture(scope="module")
def node_hung(tmp_path_factory, receiver, hanging):
    # An events timeout far beyond any job here: were anything waiting on an event, it would show.
    proc = NodeProcess(tmp_path_factory.mktemp("progress-hung"), receiver.url, {
        "events": {"url": hanging.url, "timeout_s": 300, "min_interval_s": 0},
    }).start()
    yield proc
    assert proc.stop() == 0, proc.tail()  # in-flight events are given up at once, not awaited


async def run_job(http, node, receiver, job_id: str):
    status, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"steps": 20}))
    assert status == 202, body
    (callback,) = await receiver.await_callback(job_id)
    await asyncio.to_thread(node.wait_event, "callback_succeeded", 30, job_id=job_id)
    code, job = node.get(f"/jobs/{job_id}", token=TOKEN)
    return callback, job


def assert_ran_as_usual(callback, job) -> None:
    assert callback.fields["status"] == "succeeded" and "output_image" in callback.files
    assert job["state"] == "succeeded" and job["callback"] == {"state": "delivered", "attempts": 1, "last_status": 200}
    timings = job["timings_ms"]
    assert 0 <= timings["queue"] <= timings["total"] and 0 <= timings["inference"] <= timings["total"]
    assert {k: int(callback.fields[f"{k}_time_ms"]) for k in ("queue", "prepare", "inference", "finish", "total")} == timings
    assert job["progress"] == {"step": 20, "total": 20}


async def test_a_hanging_events_receiver_changes_nothing(node_hung, receiver, hanging, http):
    callback, job = await run_job(http, node_hung, receiver, "hung-events-1")
    # The callback went out and was answered while the job's first event still hangs.
    assert hanging.hanging >= 1 and hanging.for_job("hung-events-1")[0].body["type"] == "job.started"
    assert_ran_as_usual(callback, job)
    assert metric(node_hung, "job.started", "sent") == metric(node_hung, "job.started", "failed") == 0
    # Its progress came while job.started was still on its way: dropped, and counted.
    assert metric(node_hung, "job.progress", "dropped") >= 1
    # Another job's events are not held up by this one's.
    callback, job = await run_job(http, node_hung, receiver, "hung-events-2")
    assert_ran_as_usual(callback, job)
    assert [e.body["type"] for e in hanging.for_job("hung-events-2")] == ["job.started"]


async def test_a_refusing_events_receiver_changes_nothing(node_hung, receiver, http):
    # events.* apply at once on a reload (SIGHUP).
    node_hung.config["events"]["url"] = f"http://127.0.0.1:{free_port()}/events"  # nothing listens there
    node_hung.config_path.write_text(yaml.safe_dump(node_hung.config))
    assert node_hung.events("config_reloaded") == []
    node_hung.signal(signal.SIGHUP)
    reloaded = await asyncio.to_thread(node_hung.wait_event, "config_reloaded")
    assert reloaded["changed"] == ["events.url"] and reloaded["recycle_worker"] is False
    callback, job = await run_job(http, node_hung, receiver, "refused-events-1")
    assert_ran_as_usual(callback, job)
    # One attempt each, refused at once: the started event and the progress after it failed.
    await asyncio.to_thread(node_hung.wait_event, "event_failed", 30, job_id="refused-events-1", type="job.started")
    assert metric(node_hung, "job.started", "failed") == 1
