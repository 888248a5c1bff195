"""The worker's resident memory over 20 jobs of the shipped Qwen graph on random weights:
flat once the first jobs have sized the allocator's pools. Leaner than the run in
test_comfyui_qwen_run.py, so 20 jobs fit in CI: the CI shrink's files at half its working
resolution each way (the divisor is not part of the files), one sampling step per job (the
job's `steps`), no warm-up (the first job loads the models)."""

from __future__ import annotations

import dataclasses

import psutil
import pytest

from bench.qwen_shrink import CI
from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.comfyui import require_root
from tests.support.node import NodeProcess
from tests.support.qwen import ensure_test_weights, qwen_settings

pytestmark = pytest.mark.timeout(900)
LEAN = dataclasses.replace(CI, resolution_divisor=16)
JOBS = 20
SETTLING = 5  # the first jobs may still grow the allocator's pools
MiB = 2**20
# Allowed growth of the worker's RSS from job SETTLING to the last (docs/development.md,
# "ComfyUI in the tests"): 2 MiB a job would pass it; a job's graph outputs (its text conditioning alone is
# ~3 MB here) kept by every job would.
GROWTH_BUDGET = 32 * MiB
PERSON, GARMENT = images.person(384, 512), images.garment()


@pytest.fixture(scope="module")
def lean_node(tmp_path_factory, receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("qwen-memory"), receiver.url, {
        "worker": {"backend": "tests.support.qwen:QwenTestBackend", "startup_timeout_s": 600,
                   "inference_timeout_s": 300},
        "model": {"custom": qwen_settings(require_root(), ensure_test_weights(CI), shrink=LEAN, warmup=False)},
    }).start(timeout=600)
    yield proc
    assert proc.stop() == 0, proc.tail()


async def test_worker_memory_stays_flat_over_20_jobs(lean_node, receiver, http):
    worker = psutil.Process(lean_node.worker_pid())
    after: list[int] = []
    for n in range(JOBS):
        job_id = f"qwen-rss-{n}"
        status, _, body = await submit(http, lean_node.base_url, tryon_form(
            job_id, person_image=PERSON, garment_image=GARMENT, config={"seed": n, "steps": 1}))
        assert status == 202, body
        (callback,) = await receiver.await_callback(job_id, timeout=300)
        assert callback.fields["status"] == "succeeded", callback.fields
        after.append(worker.memory_info().rss)
    assert lean_node.worker_pid() == worker.pid
    series = ", ".join(f"{rss / MiB:.0f}" for rss in after)
    print(f"worker RSS after each job (MiB): {series}")
    steady = after[SETTLING - 1:]
    assert max(steady) - steady[0] <= GROWTH_BUDGET, series
    # Between jobs the worker released what the engine's own job loop releases.
    assert lean_node.events("worker_released")
