"""Progress from the comfyui backend on ComfyUI's real engine (CPU), through the real node:
the engine's own KSampler reports its steps through the engine's progress hook; the engine's
own tiled VAE decode reports its tiles through the same hook, and those never reach the job
(tests/support/comfyui_sampler.py: a random-weight model, no files)."""

from __future__ import annotations

import pytest

from tests.support.client import submit, tryon_form
from tests.support.comfyui import noise_png, require_root
from tests.support.comfyui_sampler import SAMPLER_NODE, TILED_DECODE_NODE, sampler_settings
from tests.support.node import TOKEN, NodeProcess

STEPS = 7


@pytest.fixture(scope="module")
def sampler_node(tmp_path_factory, receiver, events_receiver):
    root = require_root()
    proc = NodeProcess(tmp_path_factory.mktemp("comfy-progress"), receiver.url, {
        "worker": {"backend": "tests.support.comfyui_sampler:SamplerTestBackend", "startup_timeout_s": 300},
        "model": {"custom": sampler_settings(root)},
        "events": {"url": events_receiver.url, "min_interval_s": 0},
    }).start(timeout=300)
    yield proc
    assert proc.stop() == 0, proc.tail()


async def test_the_samplers_steps_are_the_jobs_progress_and_the_vae_tiles_are_not(
    sampler_node, receiver, events_receiver, http
):
    form = tryon_form("comfy-steps-1", person_image=noise_png(64, 48, seed=1), garment_image=noise_png(16, 12, seed=2),
                      config={"steps": STEPS, "seed": 5})
    status, _, body = await submit(http, sampler_node.base_url, form)
    assert status == 202, body
    (callback,) = await receiver.await_callback("comfy-steps-1")
    assert callback.fields["status"] == "succeeded", callback.fields

    # What the engine's hook was called with, before the filter: both nodes reported.
    calls = sampler_node.events("test_progress_hook")
    by_node = {node: [(c["value"], c["total"]) for c in calls if c["node"] == node]
               for node in (SAMPLER_NODE, TILED_DECODE_NODE)}
    assert by_node[SAMPLER_NODE] == [(n, STEPS) for n in range(1, STEPS + 1)]
    assert by_node[TILED_DECODE_NODE], "the tiled decode reported no tiles: the filter was not put to the test"
    tiles = by_node[TILED_DECODE_NODE][0][1]
    assert tiles != STEPS

    # What the job tells: the sampler's last step, never a tile count.
    code, job = sampler_node.get("/jobs/comfy-steps-1", token=TOKEN)
    assert code == 200 and job["progress"] == {"step": STEPS, "total": STEPS}, job
    assert job["started_at"] is not None and job["started_at"] >= job["created_at"]
    progress = [e.body for e in events_receiver.for_job("comfy-steps-1") if e.body["type"] == "job.progress"]
    assert all(e["total"] == STEPS for e in progress), progress
    steps = [e["step"] for e in progress]
    assert steps == sorted(set(steps))
