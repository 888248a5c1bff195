"""Cancelling a ComfyUI graph at any moment: the real worker on the real engine (CPU), driven by
the test as its supervisor, so a cancel can arrive mid-graph or together with the job itself
(DELETE /jobs through the real node: tests/integration/test_comfyui_backend.py)."""

from __future__ import annotations

import pytest

from ipc.messages import CancelJob, JobFailed, JobSucceeded, Ready, RunJob
from tests.support.comfyui import HANG_MESSAGE, blend_settings, noise_png, require_root
from tests.support.worker_harness import WorkerHarness

BACKEND = "tests.support.comfyui:TestComfyUIBackend"
PERSON, GARMENT = noise_png(64, 48, seed=1), noise_png(16, 12, seed=2)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    root = require_root()
    harness = WorkerHarness(tmp_path_factory.mktemp("comfy-worker"), BACKEND, blend_settings(root)).start()
    ready = harness.receive(timeout=300)
    assert isinstance(ready, Ready), f"{ready}\n{harness.tail()}"
    yield harness
    assert harness.stop() == 0, harness.tail()


def run(job_id: str, prompt: str | None = None) -> RunJob:
    return RunJob(job_id=job_id, seed=3, output_format="png", steps=5, prompt=prompt)


def test_cancel_interrupts_the_running_graph_and_the_next_job_runs(worker):
    worker.send(run("hang-1", prompt="hang"), PERSON, GARMENT)
    worker.wait_event("library_output", line=HANG_MESSAGE)  # the graph is inside the node now
    worker.send(CancelJob(job_id="hang-1"))
    failed = worker.receive(timeout=60)
    assert isinstance(failed, JobFailed), failed
    assert (failed.job_id, failed.error_code) == ("hang-1", "cancelled")
    executed = worker.wait_event("comfyui_graph_executed", job_id="hang-1")
    assert executed["success"] is False
    # The engine's interrupt flag does not leak into the next job.
    worker.send(run("after-hang"), PERSON, GARMENT)
    done = worker.receive(timeout=60)
    assert isinstance(done, JobSucceeded), done
    assert done.job_id == "after-hang"


def test_a_cancel_sent_with_the_job_ends_it_as_cancelled(worker):
    # Whether the cancel lands before the graph starts (the engine would clear an early
    # interrupt) or while it runs, the job ends cancelled instead of hanging.
    worker.send(run("hang-2", prompt="hang"), PERSON, GARMENT)
    worker.send(CancelJob(job_id="hang-2"))
    failed = worker.receive(timeout=60)
    assert isinstance(failed, JobFailed), failed
    assert (failed.job_id, failed.error_code) == ("hang-2", "cancelled")
    worker.send(run("after-hang-2"), PERSON, GARMENT)
    assert isinstance(worker.receive(timeout=60), JobSucceeded)
