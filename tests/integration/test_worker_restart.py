"""A worker that dies costs its job, never the node: the node restarts it and goes on."""

from __future__ import annotations

import os
import signal

from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import start_long_job, submit, tryon_form


async def test_worker_killed_mid_job_fails_that_job_and_the_node_recovers(node, receiver, http):
    await start_long_job(http, node, "crash-1")
    old_pid = node.worker_pid()
    os.kill(old_pid, signal.SIGKILL)

    # The API keeps answering while the worker is down.
    code, _ = node.get("/health/live")
    assert code == 200

    (callback,) = await receiver.await_callback("crash-1")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "worker_crashed"
    assert "SIGKILL" in callback.fields["error_message"]

    node.wait_ready()
    status = node.gpu_status()
    assert status["worker"]["pid"] != old_pid
    assert status["worker"]["restarts"] == 1
    assert status["busy"] is False
    exited = node.wait_event("worker_exited", pid=old_pid)
    assert exited["reason"] == "oom_kill"  # SIGKILL not sent by us: reported as a possible OOM kill

    code, text = node.get("/metrics")
    restarts = {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text) if f.name == "gpu_server_worker_restarts"
        for s in f.samples if s.name.endswith("_total")
    }
    assert restarts["oom_kill"] == 1

    status_code, _, body = await submit(http, node.base_url, tryon_form("after-crash"))
    assert status_code == 202, body
    (callback,) = await receiver.await_callback("after-crash")
    assert callback.fields["status"] == "succeeded"


async def test_jobs_are_refused_with_503_while_the_worker_restarts(node, receiver, http):
    node.wait_ready()
    pid = node.worker_pid()
    os.kill(pid, signal.SIGKILL)
    node.wait_event("worker_exited", pid=pid)
    # Until the new worker is ready, /tryon says not_ready with a Retry-After.
    status, headers, body = await submit(http, node.base_url, tryon_form("during-restart"))
    if status == 503:  # the new worker may already be ready on a fast machine
        assert body["error"] == "not_ready"
        assert int(headers["Retry-After"]) >= 1
    else:
        assert status == 202
        await receiver.await_callback("during-restart")
    node.wait_ready()
