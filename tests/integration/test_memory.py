"""The supervisor's memory stays flat under hostile load: 2,000 rejected uploads and a
1 GB callback answer move its resident memory (peak and end) by less than 20 MiB from
where it stood once warmed up. The figures are printed (pytest -s)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.memory import MiB, RssWatch
from tests.support.node import NodeProcess
from tests.support.receiver import Reply

UPLOADS = 2000
CONCURRENCY = 4
MAX_IMAGE = 256 * 1024
# Image bytes the node must read before refusing: the uploads cost it real work.
NOISE = images.noise(160, 160)  # ~77 KB of PNG
OVERSIZE = images.noise(320, 320)  # over MAX_IMAGE: a 413 mid-body


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    overrides = {"images": {"max_bytes": MAX_IMAGE}, "server": {"max_body_bytes": 4 * MAX_IMAGE}}
    proc = NodeProcess(tmp_path_factory.mktemp("memory"), receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


REFUSALS = [
    # (what changes in an otherwise valid form, the answer)
    (dict(token="wrong-token-0123456789"), 401),
    (dict(person_image=b"not an image " * 5000), 415),
    (dict(garment_image=OVERSIZE), 413),
    (dict(omit=("provider",), person_image=NOISE), 422),
    (dict(config="{broken", person_image=NOISE), 400),
    (dict(person_image=images.png_claiming(20000, 2)), 422),
]


async def reject(http, node, count: int) -> None:
    cases = itertools.islice(itertools.cycle(REFUSALS), count)
    lock = asyncio.Lock()

    async def worker() -> None:
        while True:
            async with lock:
                case = next(cases, None)
            if case is None:
                return
            change, expected = case
            change = dict(change)
            token = change.pop("token", None)
            form = tryon_form("rejected", omit=change.pop("omit", ()), **change)
            kwargs = {"token": token} if token else {}
            status, _, body = await submit(http, node.base_url, form, **kwargs)
            assert status == expected, body

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def test_rss_stays_flat_through_rejected_uploads_and_a_1gb_callback_answer(node, receiver, http):
    # Warm up: every code path once, so first-use allocations are not counted as growth.
    await reject(http, node, 60)
    status, _, body = await submit(http, node.base_url, tryon_form("memory-warmup", config={"steps": 1}))
    assert status == 202, body
    await receiver.await_callback("memory-warmup")

    receiver.answer_for["memory-1gb"] = lambda: Reply(200, body_bytes=1024 * MiB)
    with RssWatch(node.pid) as rss:
        await reject(http, node, UPLOADS)
        status, _, body = await submit(http, node.base_url, tryon_form("memory-1gb", config={"steps": 1}))
        assert status == 202, body
        await asyncio.to_thread(node.wait_event, "callback_succeeded", 60.0, job_id="memory-1gb")
    print(f"supervisor RSS over {UPLOADS} rejected uploads and a 1 GB callback answer: {rss.report()}")
    assert rss.peak - rss.start < 20 * MiB, rss.report()
    assert rss.end - rss.start < 20 * MiB, rss.report()
