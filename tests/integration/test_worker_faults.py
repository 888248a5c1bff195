"""Faults inside the worker cost one job at most, never the node.

One node with the `Faulty` test backend (tests/support/backends.py): a job's prompt
chooses how the worker misbehaves. Short watchdog limits keep the test quick.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.faults import FAULTY, run_job
from tests.support.node import TOKEN, NodeProcess
from tests.support.processes import alive

@pytest.fixture(scope="module")
def faulty(tmp_path_factory, receiver):
    workdir = tmp_path_factory.mktemp("faulty")
    overrides = {
        "worker": {
            "backend": FAULTY,
            "heartbeat_interval_s": 0.2,
            "heartbeat_timeout_s": 2,
            "inference_timeout_s": 4,
            "max_backoff_s": 0.5,
            "max_restarts": 100,
        },
        "model": {"custom": {"marker_dir": str(workdir)}},
    }
    proc = NodeProcess(workdir, receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


def restarts_by_reason(node) -> dict[str, float]:
    _, text = node.get("/metrics")
    return {
        s.labels["reason"]: s.value
        for f in text_string_to_metric_families(text) if f.name == "gpu_server_worker_restarts"
        for s in f.samples if s.name.endswith("_total")
    }


async def test_a_segfault_mid_job_fails_the_job_and_a_new_worker_takes_the_next(faulty, receiver, http):
    before = restarts_by_reason(faulty).get("signal", 0)
    old_pid = faulty.worker_pid()
    callback = await run_job(http, faulty, receiver, "segv-1", "segv")
    assert callback.fields["error_code"] == "worker_crashed"
    assert "SIGSEGV" in callback.fields["error_message"]
    assert not alive(old_pid)
    assert restarts_by_reason(faulty)["signal"] == before + 1
    callback = await run_job(http, faulty, receiver, "after-segv")
    assert callback.fields["status"] == "succeeded"
    assert faulty.worker_pid() != old_pid


async def test_out_of_memory_fails_the_job_and_keeps_the_same_worker(faulty, receiver, http):
    await asyncio.to_thread(faulty.wait_ready)
    pid = faulty.worker_pid()
    callback = await run_job(http, faulty, receiver, "oom-1", "oom")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "out_of_memory"
    callback = await run_job(http, faulty, receiver, "after-oom")
    assert callback.fields["status"] == "succeeded"
    assert faulty.worker_pid() == pid


async def test_a_hung_job_is_killed_by_the_watchdog_and_fails_with_inference_timeout(faulty, receiver, http):
    await asyncio.to_thread(faulty.wait_ready)
    pid = faulty.worker_pid()
    callback = await run_job(http, faulty, receiver, "hang-1", "hang")
    assert callback.fields["error_code"] == "inference_timeout"
    assert "inference_timeout_s" in callback.fields["error_message"]
    exited = faulty.wait_event("worker_exited", pid=pid)
    assert exited["reason"] == "watchdog"
    callback = await run_job(http, faulty, receiver, "after-hang")
    assert callback.fields["status"] == "succeeded"


async def test_a_worker_that_stops_beating_is_killed_and_its_job_fails(faulty, receiver, http):
    await asyncio.to_thread(faulty.wait_ready)
    pid = faulty.worker_pid()
    callback = await run_job(http, faulty, receiver, "freeze-1", "freeze")
    assert callback.fields["error_code"] == "inference_timeout"
    assert "heartbeat" in callback.fields["error_message"]
    exited = faulty.wait_event("worker_exited", pid=pid)
    assert exited["reason"] == "heartbeat"
    assert not alive(pid)  # a stopped process is killed all the same
    assert restarts_by_reason(faulty)["heartbeat"] >= 1


class Poller(threading.Thread):
    """Polls the operator routes every 50 ms until stopped; records every failure."""

    ROUTES = ("/health/live", "/health", "/gpu/status", "/metrics")

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.stop_event = threading.Event()
        self.polls = 0
        self.failures: list[str] = []

    def run(self) -> None:
        while not self.stop_event.wait(0.05):
            for route in self.ROUTES:
                request = urllib.request.Request(self.base_url + route, headers={"X-Internal-Auth": TOKEN})
                problem = None
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        if response.status != 200:
                            problem = f"status {response.status}"
                except urllib.error.HTTPError as error:
                    if not (route == "/health" and error.code == 503):  # not ready is an answer
                        problem = f"status {error.code}"
                except OSError as exc:
                    problem = repr(exc)
                if problem is not None:
                    self.failures.append(f"{route}: {problem}")
                elif route == "/health/live":
                    self.polls += 1


async def test_five_crashes_in_a_row_never_fail_a_liveness_poll(faulty, receiver, http):
    poller = Poller(faulty.base_url)
    poller.start()
    try:
        pids = set()
        for i in range(5):
            await asyncio.to_thread(faulty.wait_ready)
            pids.add(faulty.worker_pid())
            callback = await run_job(http, faulty, receiver, f"loop-{i}", "kill")
            assert callback.fields["error_code"] == "worker_crashed"
        callback = await run_job(http, faulty, receiver, "after-loop")
        assert callback.fields["status"] == "succeeded"
    finally:
        poller.stop_event.set()
        poller.join(10)
    assert len(pids) == 5
    assert poller.failures == []
    assert poller.polls > 10
