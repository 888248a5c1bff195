"""A worker that keeps dying: give up after `worker.max_restarts`, drain, exit 3;
and, where configured, a job whose worker crashed runs once more."""

from __future__ import annotations

import asyncio

from tests.support.client import submit
from tests.support.node import NodeProcess
from tests.support.processes import alive
from tests.support.faults import FAULTY, fault_form, run_job


def test_a_worker_that_never_loads_ends_the_node_with_exit_code_3(tmp_path, receiver):
    node = NodeProcess(
        tmp_path, receiver.url,
        {"worker": {"backend": "tests.support.backends:FailingLoad", "max_restarts": 2,
                    "restart_window_s": 600, "max_backoff_s": 0.1}},
    ).start(wait=False)
    assert node.wait_exit(90) == 3, node.tail()
    assert len(node.events("worker_startup_failed")) == 3  # the first start and 2 restarts
    (failed,) = node.events("worker_failed")
    assert "worker.max_restarts is 2" in failed["why"]
    assert node.events("node_stopped")


async def test_a_crash_loop_under_load_fails_every_job_honestly_then_exits_3(tmp_path, receiver, http):
    node = NodeProcess(
        tmp_path, receiver.url,
        {"worker": {"backend": FAULTY, "max_restarts": 1, "max_backoff_s": 0.1},
         "queue": {"max_pending": 2}, "model": {"custom": {"marker_dir": str(tmp_path)}}},
    ).start()
    worker = node.worker_pid()
    # cl-1 holds the worker until all three are in; then every worker it meets dies.
    for job_id, fault in (("cl-1", "kill_on_go"), ("cl-2", "kill"), ("cl-3", None)):
        status, _, body = await submit(http, node.base_url, fault_form(job_id, fault))
        assert status == 202, body
    (tmp_path / "cl-1.go").touch()
    assert await asyncio.to_thread(node.wait_exit, 90) == 3, node.tail()

    outcomes = {job_id: (await receiver.await_callback(job_id))[0].fields for job_id in ("cl-1", "cl-2", "cl-3")}
    assert outcomes["cl-1"]["error_code"] == "worker_crashed"
    assert outcomes["cl-2"]["error_code"] == "worker_crashed"
    # Never run: the node gave up on its worker first.
    assert outcomes["cl-3"]["error_code"] == "shutdown"
    assert "crash loop" in outcomes["cl-3"]["error_message"]
    assert not alive(worker)
    assert len(node.events("worker_exited")) == 2


async def test_with_retry_crashed_jobs_a_job_survives_one_worker_crash(tmp_path, receiver, http):
    node = NodeProcess(
        tmp_path, receiver.url,
        {"worker": {"backend": FAULTY, "retry_crashed_jobs": True, "max_backoff_s": 0.1},
         "model": {"custom": {"marker_dir": str(tmp_path)}}},
    ).start()
    try:
        first_pid = node.worker_pid()
        callback = await run_job(http, node, receiver, "retry-1", "crash_once")
        assert callback.fields["status"] == "succeeded"
        assert node.worker_pid() != first_pid
        (retried,) = node.events("job_retrying")
        assert retried["job_id"] == "retry-1"

        # A job that kills every worker it meets runs twice, then fails.
        callback = await run_job(http, node, receiver, "retry-2", "kill")
        assert callback.fields["error_code"] == "worker_crashed"
        assert [e["job_id"] for e in node.events("job_retrying")] == ["retry-1", "retry-2"]
        assert [e["attempt"] for e in node.events("job_dispatched") if e["job_id"] == "retry-2"] == [1, 2]
    finally:
        assert node.stop() == 0, node.tail()
