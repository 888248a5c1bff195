"""Job events (supervisor/delivery/events.py) against a real HTTP receiver on 127.0.0.1: the body and
headers of the contract, signatures, the interval, one event per job in flight, and
receivers that hang, refuse, fail or redirect, each costing the event only, counted."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from contextlib import asynccontextmanager
from datetime import datetime

import aiohttp
import pytest
import yaml
from aiohttp import web
from standardwebhooks import Webhook

from supervisor.config import CallbackConfig, EventsConfig
from supervisor.delivery.events import ANSWER_READ_BYTES, EventSender, read_at_most
from supervisor.jobs.job import Job, JobOptions
from supervisor.metrics.registry import Metrics
from tests.support.events_receiver import EventsReceiver
from tests.support.node import REPO, free_port

SECRET = "whsec_" + base64.b64encode(b"events-secret-0123456789abcdef!!").decode()
CALLBACK = CallbackConfig(url="http://127.0.0.1:9/cb", token="callback-token")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def running_job(job_id: str = "j1") -> Job:
    job = Job(job_id, "user-1", "session-1", "qwen", JobOptions(), b"p", b"g", time.monotonic())
    job.mark_handed(time.monotonic(), "m")
    job.mark_model_started(time.monotonic())
    return job


def count(metrics: Metrics, kind: str, result: str) -> float:
    return metrics.registry.get_sample_value("gpu_server_events_total", {"type": kind, "result": result}) or 0.0


@pytest.fixture
def receiver():
    rx = EventsReceiver().start()
    yield rx
    rx.stop()


async def started_sender(url: str | None, callback: CallbackConfig = CALLBACK, clock=None, **events) -> EventSender:
    sender = EventSender(EventsConfig(url=url, **events), callback, "node-1", Metrics(), clock=clock or Clock())
    await sender.start()
    return sender


def step(sender: EventSender, job: Job, at: int, of: int) -> None:
    job.mark_progress(at, of)
    sender.progress(job)


async def test_started_then_progress_with_the_contracts_body_and_headers(receiver):
    signed = CallbackConfig(url=CALLBACK.url, token="callback-token", signing_secret=SECRET)
    sender = await started_sender(receiver.url, signed)
    job = running_job()
    try:
        sender.started(job)
        await sender.wait_idle()
        step(sender, job, 3, 8)
        await sender.wait_idle()
    finally:
        await sender.close()
    started, progress = receiver.events
    assert started.body == {
        "type": "job.started", "job_id": "j1", "user_id": "user-1", "session_id": "session-1",
        "node_id": "node-1", "step": None, "total": None, "at": started.body["at"],
    }
    assert progress.body["type"] == "job.progress" and (progress.body["step"], progress.body["total"]) == (3, 8)
    documented = yaml.safe_load((REPO / "supervisor" / "http" / "openapi.yaml").read_text())["components"]["schemas"]["JobEvent"]
    assert set(started.body) == set(documented["required"]) == set(documented["properties"])
    for event in (started, progress):
        assert datetime.fromisoformat(event.body["at"].replace("Z", "+00:00")).tzinfo is not None
        assert event.headers["Content-Type"] == "application/json"
        assert event.headers["X-Internal-Auth"] == "callback-token"  # events.token unset
        assert event.headers["User-Agent"].startswith("gpu-server/")
        Webhook(SECRET).verify(event.raw, event.headers)  # raises if the signature is wrong
    assert started.headers["webhook-id"] != progress.headers["webhook-id"]  # one per event
    assert count(sender.metrics, "job.started", "sent") == count(sender.metrics, "job.progress", "sent") == 1


async def test_events_token_and_no_signature_without_a_secret(receiver):
    sender = await started_sender(receiver.url, token="events-token")
    try:
        sender.started(running_job())
        await sender.wait_idle()
    finally:
        await sender.close()
    (event,) = receiver.events
    assert event.headers["X-Internal-Auth"] == "events-token"
    assert event.headers["webhook-id"].startswith("msg_")
    assert "webhook-signature" not in event.headers and "webhook-timestamp" not in event.headers


async def test_progress_at_most_once_per_interval_and_the_skipped_are_not_counted(receiver):
    clock = Clock()
    sender = await started_sender(receiver.url, clock=clock, min_interval_s=1.0)
    job = running_job()
    try:
        for at in range(1, 11):  # ten steps, 0.25 s apart: at 0, 1.0, 2.0 s the interval has passed
            step(sender, job, at, 10)
            await sender.wait_idle()
            clock.now += 0.25
    finally:
        await sender.close()
    assert [e.body["step"] for e in receiver.events] == [1, 5, 9]
    assert count(sender.metrics, "job.progress", "sent") == 3
    assert count(sender.metrics, "job.progress", "dropped") == count(sender.metrics, "job.progress", "failed") == 0


async def test_one_event_per_job_in_flight_the_next_is_dropped_and_counted():
    hanging = EventsReceiver(hang=True).start()
    clock = Clock()
    sender = await started_sender(hanging.url, clock=clock, min_interval_s=1.0, timeout_s=30)
    job, other = running_job("j1"), running_job("j2")
    try:
        sender.started(job)
        await asyncio.to_thread(hanging.wait_until, lambda rx: rx.hanging == 1)
        step(sender, job, 1, 10)  # due, but j1's started is still on its way: dropped
        step(sender, job, 2, 10)  # within the interval of the dropped one: not an event
        sender.started(other)  # another job's event is not held up by j1's
        await asyncio.to_thread(hanging.wait_until, lambda rx: rx.hanging == 2)
        assert count(sender.metrics, "job.progress", "dropped") == 1
        assert count(sender.metrics, "job.started", "dropped") == 0
    finally:
        await sender.close()  # what is still on its way is given up: failed
        hanging.stop()
    assert count(sender.metrics, "job.started", "failed") == 2
    assert [e.body["job_id"] for e in hanging.events] == ["j1", "j2"]


@pytest.mark.parametrize("answer", ["refused", 503, 401, "timeout"])
async def test_a_receiver_that_refuses_fails_or_is_too_slow_costs_the_event_only(answer):
    receiver = EventsReceiver(status=answer if isinstance(answer, int) else 200, hang=answer == "timeout").start()
    url = f"http://127.0.0.1:{free_port()}/events" if answer == "refused" else receiver.url
    sender = await started_sender(url, timeout_s=0.2)
    try:
        sender.started(running_job())
        await sender.wait_idle()  # the one attempt is over: no retry follows
        assert count(sender.metrics, "job.started", "failed") == 1
        assert count(sender.metrics, "job.started", "sent") == 0
    finally:
        await sender.close()
        receiver.stop()
    assert len(receiver.events) == (0 if answer == "refused" else 1)


async def test_a_redirect_is_not_followed(receiver):
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(receiver.url)

    async with serving("POST", "/events", moved) as url:
        sender = await started_sender(url)
        try:
            sender.started(running_job())
            await sender.wait_idle()
        finally:
            await sender.close()
    assert count(sender.metrics, "job.started", "failed") == 1
    assert receiver.events == []  # neither the token nor the event went to the other address


async def test_at_most_64_kib_of_an_answer_is_read():
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(64):
            await response.write(b"x" * 16384)  # 1 MiB in all
        return response

    async with serving("GET", "/", huge) as url, aiohttp.ClientSession() as session, session.get(url) as response:
        assert await read_at_most(response, ANSWER_READ_BYTES) == ANSWER_READ_BYTES


async def test_nothing_is_sent_or_counted_without_a_url_and_everything_is_dropped_while_draining(receiver):
    off = await started_sender(None)
    off.started(running_job())
    step(off, running_job(), 1, 2)
    await off.close()
    assert all(count(off.metrics, k, r) == 0 for k in ("job.started", "job.progress") for r in ("sent", "dropped"))

    sender = await started_sender(receiver.url)
    sender.drain()
    job = running_job()
    sender.started(job)
    step(sender, job, 1, 2)
    await sender.close()
    assert count(sender.metrics, "job.started", "dropped") == count(sender.metrics, "job.progress", "dropped") == 1
    assert receiver.events == []


async def test_a_reload_changes_where_the_next_event_goes(receiver):
    sender = await started_sender(f"http://127.0.0.1:{free_port()}/nowhere")
    try:
        sender.reconfigure(EventsConfig(url=receiver.url, token="new-token"), CALLBACK)
        sender.started(running_job())
        await sender.wait_idle()
    finally:
        await sender.close()
    (event,) = receiver.events
    assert event.headers["X-Internal-Auth"] == "new-token" and json.loads(event.raw)["type"] == "job.started"


def test_a_failure_inside_the_sender_costs_the_event_never_the_caller():
    # No event loop runs here, so the event's task cannot be made: counted, logged, not raised.
    sender = EventSender(EventsConfig(url="http://127.0.0.1:9/events"), CALLBACK, "node-1", Metrics())
    sender._session = object()  # type: ignore[assignment]  # as if started
    sender.started(running_job())
    assert count(sender.metrics, "job.started", "failed") == 1


@asynccontextmanager
async def serving(method: str, path: str, handler):
    """An aiohttp server on a free port answering `method path` with `handler`: its URL."""
    app = web.Application()
    app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}{path}"  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
