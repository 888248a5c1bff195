"""The worker's progress reports on the wire, the real worker driven by the test as its
supervisor: a 1000-step job does not flood the socket, steps only rise, and the last step
arrives before the result."""

from __future__ import annotations

import time

from gpu_worker.progress import SEND_INTERVAL_S
from ipc.messages import JobSucceeded, Ready, RunJob
from tests.support import images
from tests.support.worker_harness import WorkerHarness

STEPS = 1000


def test_a_thousand_steps_send_a_few_reports_and_the_last_before_the_result(tmp_path):
    worker = WorkerHarness(tmp_path, "reference", {}).start()
    try:
        assert isinstance(worker.receive(timeout=120), Ready)
        started = time.monotonic()
        worker.send(RunJob(job_id="many-steps", seed=1, output_format="jpeg", steps=STEPS),
                    images.solid(256, 256), images.garment())
        done = worker.receive(timeout=120)
        elapsed = time.monotonic() - started
        assert isinstance(done, JobSucceeded), done
        reports = [(p.step, p.total) for p in worker.progress if p.job_id == "many-steps"]
        # At most one a sampling interval while it ran, plus the last one before the result.
        assert 1 <= len(reports) <= elapsed / SEND_INTERVAL_S + 2, (len(reports), elapsed)
        assert reports[-1] == (STEPS, STEPS)  # received before the result
        assert [s for s, _ in reports] == sorted({s for s, _ in reports}) and {t for _, t in reports} == {STEPS}
    finally:
        assert worker.stop() == 0, worker.tail()
