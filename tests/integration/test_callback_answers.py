"""What the node does with a hostile Asset Service's answer: a redirect is final (the token
and the result never go to another host), and a huge answer body is not read."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.client import submit, tryon_form
from tests.support.memory import RssWatch
from tests.support.node import CALLBACK_TOKEN, TOKEN, NodeProcess
from tests.support.receiver import CallbackReceiver, Reply

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def elsewhere():
    """Another host the Asset Service's redirects point at: it must never hear from the node."""
    rx = CallbackReceiver().start()
    yield rx
    rx.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("callback-answers"), receiver.url).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_final_and_never_followed(node, receiver, elsewhere, http, status):
    job_id = f"redirect-{status}"
    receiver.answer_for[job_id] = lambda: Reply(status, {"Location": elsewhere.url})
    code, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"steps": 1}))
    assert code == 202, body
    failed = await node_event(node, "callback_failed", job_id=job_id, final=True)
    assert failed["undeliverable"] is True and failed["status"] == status
    # One attempt, to the configured URL only: neither the token nor the result went elsewhere.
    assert len(receiver.for_job(job_id)) == 1
    assert elsewhere.calls == [] and elsewhere.stray == []
    assert not [s for s in receiver.stray if s.headers.get("X-Internal-Auth") == CALLBACK_TOKEN]
    # Kept as a dead letter, for a replay once callback.url is fixed.
    code, job = node.get(f"/jobs/{job_id}", token=TOKEN)
    assert code == 200 and job["callback"] == {"state": "undeliverable", "attempts": 1, "last_status": status}
    dead = list((node.workdir / "spool" / "dead").glob(f"{job_id}~*.cb"))
    assert len(dead) == 1, dead
    assert not list((node.workdir / "spool").glob(f"{job_id}~*.cb"))


async def test_a_huge_answer_body_is_not_read(node, receiver, http):
    """A 256 MiB "200" answer: delivered, and the node read no more of it than it needed."""
    job_id = "huge-answer"
    streamed_before = receiver.streamed_bytes
    receiver.answer_for[job_id] = lambda: Reply(200, body_bytes=256 * MiB)
    with RssWatch(node.pid) as rss:
        code, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"steps": 1}))
        assert code == 202, body
        await node_event(node, "callback_succeeded", job_id=job_id)
    # Socket buffers on both sides hold a few MiB; the node itself reads 64 KiB and hangs up.
    assert receiver.streamed_bytes - streamed_before < 32 * MiB
    assert rss.peak - rss.start < 20 * MiB, rss.report()
    code, job = node.get(f"/jobs/{job_id}", token=TOKEN)
    assert job["callback"]["state"] == "delivered"


async def node_event(node, name: str, **match) -> dict:
    return await asyncio.to_thread(node.wait_event, name, 60.0, **match)
