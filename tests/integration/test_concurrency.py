"""Admission is atomic: of simultaneous requests, exactly as many win as there are places."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.client import long_job_form, submit, tryon_form
from tests.support.node import TOKEN, NodeProcess
from tests.support.waiting import until


async def test_twenty_simultaneous_submissions_on_an_idle_node_give_exactly_one_202(node, receiver, http):
    assert node.gpu_status()["busy"] is False
    results = await asyncio.gather(*(submit(http, node.base_url, long_job_form(f"race-{i}")) for i in range(20)))

    accepted = [(status, body) for status, _, body in results if status == 202]
    assert len(accepted) == 1, [r[0] for r in results]
    winner = accepted[0][1]["job_id"]
    assert accepted[0][1]["queue_position"] == 0
    for status, headers, body in results:
        if status == 202:
            continue
        assert status == 429, body
        assert body["error"] == "gpu_busy"
        assert int(headers["Retry-After"]) >= 1

    status = node.gpu_status()
    assert status["busy"] is True and status["current_job_id"] == winner  # from the 202 on
    await until(lambda: node.get(f"/jobs/{winner}", token=TOKEN)[1]["stage"] == "model")
    code, health = node.get("/health")
    assert code == 200 and health["worker_state"] == "busy"  # in the model stage; busy is still ready

    (callback,) = await receiver.await_callback(winner)
    assert callback.fields["status"] == "succeeded"
    # The 429s left no trace: no callback, and their ids are free to be submitted again.
    losers = [f"race-{i}" for i in range(20) if f"race-{i}" != winner]
    assert not [job_id for job_id in losers if receiver.for_job(job_id)]
    status_code, _, body = await submit(http, node.base_url, tryon_form(losers[0]))
    assert status_code == 202, body
    await receiver.await_callback(losers[0])


@pytest.fixture(scope="module")
def queue_node(tmp_path_factory, receiver):
    proc = NodeProcess(
        tmp_path_factory.mktemp("queue"), receiver.url, {"queue": {"max_pending": 2}}
    ).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


async def test_with_a_queue_of_two_three_win_and_run_in_order(queue_node, receiver, http):
    results = await asyncio.gather(*(submit(http, queue_node.base_url, long_job_form(f"q-{i}")) for i in range(20)))
    accepted = sorted((body["queue_position"], body["job_id"]) for status, _, body in results if status == 202)
    assert [position for position, _ in accepted] == [0, 1, 2]
    assert sum(1 for status, _, _ in results if status == 429) == 17

    status = queue_node.gpu_status()
    assert status["queue_length"] == 2 and status["queue_capacity"] == 2
    assert status["current_job_id"] == accepted[0][1]

    for _, job_id in accepted:
        (callback,) = await receiver.await_callback(job_id)
        assert callback.fields["status"] == "succeeded"
    finished = [e["job_id"] for e in queue_node.events("job_finished")]
    assert finished == [job_id for _, job_id in accepted]
    # Queue time grows with the position: each waited for the ones before it.
    queue_ms = [int(receiver.for_job(job_id)[0].fields["queue_time_ms"]) for _, job_id in accepted]
    assert queue_ms[0] < queue_ms[1] < queue_ms[2]
    assert queue_node.gpu_status()["busy"] is False
