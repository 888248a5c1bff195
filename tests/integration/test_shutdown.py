"""SIGTERM / SIGINT: stop taking jobs, finish what runs, deliver, stop the worker, exit 0."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.support.client import start_long_job, submit, tryon_form
from tests.support.node import NodeProcess
from tests.support.processes import alive
from tests.support.receiver import Reply


def _node(tmp_path, receiver, **overrides) -> NodeProcess:
    workdir = tmp_path / "node"
    workdir.mkdir(exist_ok=True)
    return NodeProcess(workdir, receiver.url, overrides).start()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_when_idle_is_quick_and_leaves_no_process(tmp_path, receiver, signum):
    node = _node(tmp_path, receiver)
    worker = node.worker_pid()
    node.signal(signum)
    assert node.wait_exit(30) == 0, node.tail()
    assert not alive(worker)
    assert node.events("shutdown_started")[0]["signal"] == signal.Signals(signum).name
    assert node.events("node_stopped")


async def test_sigterm_mid_job_finishes_the_job_and_delivers_its_callback(tmp_path, receiver, http):
    node = _node(tmp_path, receiver)
    worker = node.worker_pid()
    await start_long_job(http, node, "drain-1")
    node.signal(signal.SIGTERM)
    node.wait_event("shutdown_started")

    body = node.wait_health(503)
    assert body["status"] == "draining"
    status, headers, body = await submit(http, node.base_url, tryon_form("drain-refused"))
    assert status == 503 and body["error"] == "not_ready" and "Retry-After" in headers

    (callback,) = await receiver.await_callback("drain-1")
    assert callback.fields["status"] == "succeeded"
    assert await asyncio.to_thread(node.wait_exit, 60) == 0
    assert not alive(worker)
    assert not receiver.for_job("drain-refused")


async def test_jobs_still_running_at_the_drain_deadline_fail_with_shutdown(tmp_path, receiver, http):
    node = _node(tmp_path, receiver, shutdown={"drain_timeout_s": 0.5})
    worker = node.worker_pid()
    await start_long_job(http, node, "deadline-1")
    node.signal(signal.SIGTERM)
    (callback,) = await receiver.await_callback("deadline-1")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "shutdown"
    assert await asyncio.to_thread(node.wait_exit, 60) == 0
    assert not alive(worker)


async def test_a_second_signal_stops_without_waiting_for_the_drain(tmp_path, receiver, http):
    node = _node(tmp_path, receiver, shutdown={"drain_timeout_s": 600})
    worker = node.worker_pid()
    await start_long_job(http, node, "twice-1")
    node.signal(signal.SIGTERM)
    node.wait_event("shutdown_started")
    node.signal(signal.SIGTERM)
    (callback,) = await receiver.await_callback("twice-1")
    assert callback.fields["error_code"] == "shutdown"
    assert await asyncio.to_thread(node.wait_exit, 60) == 0
    # Killed on purpose: logged with its reason, never as a possible out-of-memory kill.
    (exited,) = node.events("worker_exited")
    assert exited["pid"] == worker and exited["kill_reason"] == "drain_deadline"
    assert "out-of-memory" not in exited["description"] and exited["level"] == "WARNING"


async def test_a_second_signal_cuts_short_a_delivery_waiting_out_its_backoff(tmp_path, receiver, http):
    node = _node(tmp_path, receiver, shutdown={"drain_timeout_s": 600})
    receiver.script.append(Reply(503, {"Retry-After": "120"}))
    status, _, _ = await submit(http, node.base_url, tryon_form("slow-callback"))
    assert status == 202
    await receiver.await_callback("slow-callback")  # answered 503: retry in 120 s
    node.wait_event("callback_failed", job_id="slow-callback", final=False)
    node.signal(signal.SIGTERM)
    node.wait_event("shutdown_started")
    node.signal(signal.SIGTERM)
    # Without the cut, the node would wait out the Retry-After (or the 600 s drain).
    assert await asyncio.to_thread(node.wait_exit, 60) == 0
    node.wait_event("callback_failed", job_id="slow-callback", reason="node stopped first; kept in the spool")
    assert [p.name.split("~")[0] for p in (node.workdir / "spool").glob("*.cb")] == ["slow-callback"]
