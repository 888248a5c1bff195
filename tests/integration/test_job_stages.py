"""A job's three stages in the worker, through the real node (reference backend): the GPU
slot is the model stage alone. A job past its model stage frees the slot while it finishes,
and the next job is admitted and run meanwhile; a worker killed with jobs in two stages fails
each once; cancel works until the model stage ends; a drain waits for every stage.

The test backend holds a job's finish stage (prompt `hold`) until the test drops a go-ahead
file (tests/support/backends.py: HeldFinish)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.integration.test_metrics import scrape
from tests.support.client import long_job_form, submit, tryon_form
from tests.support.node import TOKEN, NodeProcess
from tests.support.waiting import until

HELD = "tests.support.backends:HeldFinish"


def overrides(marker_dir) -> dict:
    return {
        "queue": {"max_pending": 1},
        "worker": {"backend": HELD, "max_backoff_s": 0.5, "max_restarts": 100},
        "model": {"custom": {"marker_dir": str(marker_dir)}},
        "shutdown": {"drain_timeout_s": 60},
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    workdir = tmp_path_factory.mktemp("stages")
    proc = NodeProcess(workdir, receiver.url, overrides(workdir)).start()
    proc.marker_dir = workdir
    yield proc
    assert proc.stop() == 0, proc.tail()


def stage(node, job_id: str) -> str | None:
    return node.get(f"/jobs/{job_id}", token=TOKEN)[1]["stage"]


def held(job_id: str):
    return tryon_form(job_id, config={"prompt": "hold", "steps": 1})


async def delete(http, node, job_id: str) -> tuple[int, dict]:
    async with http.delete(f"{node.base_url}/jobs/{job_id}", headers={"X-Internal-Auth": TOKEN}) as response:
        return response.status, await response.json()


async def test_a_finishing_job_frees_the_slot_and_the_next_one_runs_meanwhile(node, receiver, http):
    status, _, body = await submit(http, node.base_url, held("finishing"))
    assert status == 202, body
    await until(lambda: stage(node, "finishing") == "finish")
    gpu = node.gpu_status()
    assert gpu["busy"] is False and gpu["current_job_id"] is None and gpu["worker"]["state"] == "ready"
    assert not receiver.for_job("finishing")  # still finishing: no callback yet
    code, body = await delete(http, node, "finishing")
    assert code == 409 and body["error"] == "not_cancellable"  # past its model stage

    status, _, body = await submit(http, node.base_url, tryon_form("next", config={"steps": 1}))
    assert status == 202 and body["queue_position"] == 0, body  # the slot is free, not "queue 1"
    await until(lambda: stage(node, "next") == "finish")  # its model ran while "finishing" finished
    assert not receiver.for_job("finishing") and not receiver.for_job("next")

    (node.marker_dir / "finishing.go").touch()
    (first,) = await receiver.await_callback("finishing")
    (second,) = await receiver.await_callback("next")
    assert first.fields["status"] == second.fields["status"] == "succeeded"
    assert int(first.fields["finish_time_ms"]) > 0 and int(first.fields["prepare_time_ms"]) >= 0
    job = node.get("/jobs/finishing", token=TOKEN)[1]
    assert job["stage"] is None and job["timings_ms"]["finish"] == int(first.fields["finish_time_ms"])
    families = scrape(node)
    assert families["gpu_server_model_busy_seconds"].samples[0].value > 0  # its rate: the duty cycle
    for name in ("gpu_server_job_prepare_seconds", "gpu_server_job_finish_seconds"):
        (count,) = [s.value for s in families[name].samples if s.name.endswith("_count")]
        assert count >= 2, name


async def test_a_worker_killed_with_jobs_in_two_stages_fails_each_once(node, receiver, http):
    worker = node.worker_pid()
    assert (await submit(http, node.base_url, held("killed-finishing")))[0] == 202
    await until(lambda: stage(node, "killed-finishing") == "finish")
    assert (await submit(http, node.base_url, long_job_form("killed-modelling")))[0] == 202
    await until(lambda: stage(node, "killed-modelling") == "model")
    os.kill(worker, signal.SIGKILL)
    for job_id in ("killed-finishing", "killed-modelling"):
        (callback,) = await receiver.await_callback(job_id)
        assert callback.fields["error_code"] == "worker_crashed", callback.fields
    node.wait_health(200)  # recovered; and each job failed once, no more
    assert len(receiver.for_job("killed-finishing")) == len(receiver.for_job("killed-modelling")) == 1


async def test_a_job_prepared_and_waiting_is_cancelled_at_once_and_one_in_the_model_at_its_next_step(
    node, receiver, http
):
    assert (await submit(http, node.base_url, long_job_form("cancel-model")))[0] == 202
    await until(lambda: stage(node, "cancel-model") == "model")
    status, _, body = await submit(http, node.base_url, tryon_form("cancel-waiting"))
    assert status == 202 and body["queue_position"] == 1
    await until(lambda: stage(node, "cancel-waiting") in ("prepare", "queued"))  # handed over early
    code, body = await delete(http, node, "cancel-waiting")
    assert code == 202 and body["state"] == "cancelled"  # answered by the worker at once
    (waiting,) = await receiver.await_callback("cancel-waiting")
    assert waiting.fields["error_code"] == "cancelled" and stage(node, "cancel-model") == "model"
    code, body = await delete(http, node, "cancel-model")
    assert code == 202
    (running,) = await receiver.await_callback("cancel-model")
    assert running.fields["error_code"] == "cancelled"


async def test_a_drain_waits_for_the_jobs_in_every_stage(tmp_path, receiver, http):
    node = NodeProcess(tmp_path, receiver.url, overrides(tmp_path)).start()
    try:
        assert (await submit(http, node.base_url, held("drain-finishing")))[0] == 202
        await until(lambda: stage(node, "drain-finishing") == "finish")
        assert (await submit(http, node.base_url, long_job_form("drain-modelling")))[0] == 202
        await until(lambda: stage(node, "drain-modelling") == "model")
        assert (await submit(http, node.base_url, tryon_form("drain-waiting")))[0] == 202
        await until(lambda: stage(node, "drain-waiting") in ("prepare", "queued"))
        node.signal(signal.SIGTERM)
        node.wait_event("shutdown_started")
        assert node.process.poll() is None and not receiver.for_job("drain-finishing")
        (tmp_path / "drain-finishing.go").touch()
        assert await asyncio.to_thread(node.wait_exit, 90) == 0, node.tail()
        for job_id in ("drain-finishing", "drain-modelling", "drain-waiting"):
            (callback,) = receiver.for_job(job_id)
            assert callback.fields["status"] == "succeeded", (job_id, callback.fields)
    finally:
        node.stop()
