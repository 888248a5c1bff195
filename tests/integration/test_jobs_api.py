"""GET and DELETE /jobs/{job_id} on a real node: cancel a queued job, a running job (the
reference backend stops between steps), an unknown one (404), a finished one (409); the
callbacks of this node are signed, and verify with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.client import start_long_job, submit, tryon_form
from tests.support.node import TOKEN, NodeProcess

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    overrides = {"queue": {"max_pending": 1}, "callback": {"signing_secret": SECRET}}
    proc = NodeProcess(tmp_path_factory.mktemp("jobs"), receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


async def delete(http, node, job_id: str, token: str | None = TOKEN) -> tuple[int, dict]:
    headers = {"X-Internal-Auth": token} if token else {}
    async with http.delete(f"{node.base_url}/jobs/{job_id}", headers=headers) as response:
        return response.status, await response.json()


def verify(callback) -> None:
    Webhook(SECRET).verify(callback.raw, callback.headers, json_parse=False)


async def test_cancel_a_queued_then_the_running_job(node, receiver, http):
    worker = node.worker_pid()
    await start_long_job(http, node, "cancel-running")
    status, _, body = await submit(http, node.base_url, tryon_form("cancel-queued"))
    assert status == 202 and body["queue_position"] == 1
    code, job = node.get("/jobs/cancel-queued", token=TOKEN)
    assert code == 200 and job["state"] == "queued" and job["timings_ms"]["total"] is None
    assert job["callback"] == {"state": "pending", "attempts": 0, "last_status": None}
    datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))

    # Queued: cancelled at once, while the other job still runs.
    code, body = await delete(http, node, "cancel-queued")
    assert code == 202 and body["state"] == "cancelled"
    (queued,) = await receiver.await_callback("cancel-queued")
    assert queued.fields["status"] == "cancelled" and queued.fields["error_code"] == "cancelled"
    assert node.gpu_status()["current_job_id"] == "cancel-running"

    # Running: the worker stops the backend at its next step; the worker stays up.
    code, body = await delete(http, node, "cancel-running")
    assert code == 202 and body["state"] == "running"
    (running,) = await receiver.await_callback("cancel-running")
    assert running.fields["status"] == "cancelled" and running.fields["error_code"] == "cancelled"
    assert node.wait_event("inference_failed", job_id="cancel-running")["error_code"] == "cancelled"
    assert node.worker_pid() == worker
    code, job = node.get("/jobs/cancel-running", token=TOKEN)
    assert job["state"] == "cancelled" and job["error_code"] == "cancelled"
    assert job["timings_ms"]["total"] is not None

    # Both callbacks are signed: verified with the reference package, and refused once altered.
    for callback in (queued, running):
        verify(callback)
        with pytest.raises(WebhookVerificationError):
            Webhook(SECRET).verify(callback.raw.replace(b"cancelled", b"succeeded"), callback.headers, json_parse=False)

    # Finished now: 409, both of them.
    for job_id in ("cancel-queued", "cancel-running"):
        code, body = await delete(http, node, job_id)
        assert code == 409 and body["error"] == "not_cancellable", body


async def test_a_finished_job_is_not_cancellable_and_tells_its_timings(node, receiver, http):
    status, _, _ = await submit(http, node.base_url, tryon_form("done-1"))
    assert status == 202
    (callback,) = await receiver.await_callback("done-1")
    await asyncio.to_thread(node.wait_event, "callback_succeeded", 30, job_id="done-1")
    code, job = node.get("/jobs/done-1", token=TOKEN)
    assert code == 200
    assert job["state"] == "succeeded" and job["error_code"] is None and job["error_message"] is None
    timings = job["timings_ms"]
    assert 0 <= timings["queue"] <= timings["total"] and 0 <= timings["inference"] <= timings["total"]
    assert job["callback"] == {"state": "delivered", "attempts": 1, "last_status": 200}
    assert callback.headers["webhook-id"].startswith("msg_")
    assert int(callback.headers["webhook-timestamp"]) > 0
    code, body = await delete(http, node, "done-1")
    assert code == 409 and body["error"] == "not_cancellable"


async def test_unknown_jobs_are_404_and_both_routes_want_auth(node, http):
    code, body = node.get("/jobs/no-such-job", token=TOKEN)
    assert code == 404 and body["error"] == "not_found"
    code, body = await delete(http, node, "no-such-job")
    assert code == 404 and body["error"] == "not_found"
    code, body = node.get("/jobs/no-such-job")
    assert code == 401 and body["error"] == "unauthorized"
    code, body = await delete(http, node, "no-such-job", token=None)
    assert code == 401 and body["error"] == "unauthorized"
