"""A worker that cannot load, or loads too slowly: reported, retried, and the API stays up."""

from __future__ import annotations

import pytest

from tests.support.node import NodeProcess


@pytest.fixture
def start_node(tmp_path, receiver):
    nodes = []

    def start(**overrides) -> NodeProcess:
        proc = NodeProcess(tmp_path, receiver.url, overrides).start(wait=False)
        nodes.append(proc)
        return proc

    yield start
    for proc in nodes:
        assert proc.stop() == 0, proc.tail()


def test_a_backend_that_cannot_load_is_reported_with_its_reason_and_retried(start_node):
    node = start_node(
        worker={"backend": "tests.support.backends:FailingLoad", "max_backoff_s": 0.2},
        model={"custom": {"weights": "qwen_image_edit.safetensors"}},
    )
    failure = node.wait_event("worker_startup_failed")
    assert failure["reason"] == "FileNotFoundError"
    assert "qwen_image_edit.safetensors" in failure["error"]
    exited = node.wait_event("worker_exited", startup_failure="FileNotFoundError")
    assert exited["returncode"] == 4
    node.wait_event("worker_restarting")
    node.wait_event("worker_started", generation=3)  # it keeps trying, with backoff
    code, body = node.get("/health")
    assert code == 503 and body["status"] in ("loading", "restarting")
    assert body["model_loaded"] is False
    assert node.get("/health/live")[0] == 200


def test_a_worker_not_ready_within_the_startup_timeout_is_killed_and_restarted(start_node):
    node = start_node(
        worker={"backend": "tests.support.backends:SlowLoad", "startup_timeout_s": 1.5},
        model={"custom": {"load_seconds": 3600}},
    )
    timeout = node.wait_event("worker_startup_timeout")
    exited = node.wait_event("worker_exited", pid=timeout["pid"])
    assert exited["reason"] == "watchdog"
    node.wait_event("worker_started", generation=2)
    assert node.get("/health")[1]["status"] in ("loading", "restarting")


def test_a_slow_but_timely_load_ends_ready(start_node):
    node = start_node(
        worker={"backend": "tests.support.backends:SlowLoad", "startup_timeout_s": 60},
        model={"custom": {"load_seconds": 1}},
    )
    node.wait_event("worker_started")  # the API listens from before the worker starts
    code, body = node.get("/health")
    assert code == 503 and body["status"] == "loading"
    node.wait_ready()
    ready = node.wait_event("worker_ready", process="supervisor")
    assert ready["load_time_s"] >= 1
