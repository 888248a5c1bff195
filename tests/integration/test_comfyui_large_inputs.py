"""The largest accepted job through the real node and ComfyUI's engine (CPU): two images of
36 megapixels (images.max_pixels, each side within images.max_side), in each accepted format,
keep the worker's peak resident memory within the budget docs/comfyui.md states ("Large inputs").
The peak is the kernel's own high-water mark of the worker (nothing sampled, nothing
missed), measured from a worker that has run one small job; the figures are printed (pytest -s).
Each format gets a fresh node: memory a previous large job left in the worker's heap would
make the next one look cheaper than it is."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.comfyui import blend_settings, noise_png, require_root
from tests.support.memory import MiB, PeakRss
from tests.support.node import NodeProcess

pytestmark = pytest.mark.timeout(300)
LARGEST = (6000, 6000)  # 36 000 000 pixels
# The worker's peak above its resident memory before the job: decoding, scaling down to
# model.comfyui.input_max_pixels, the graph at 2048x2048, and the 36 MP output's resize and
# PNG. WebP costs more: Pillow decodes it through a full-size RGBA canvas and a copy of it.
BUDGET = {"PNG": 512 * MiB, "JPEG": 512 * MiB, "WEBP": 704 * MiB}


async def run_job(http, node, receiver, job_id: str, person: bytes, garment: bytes):
    status, _, body = await submit(http, node.base_url, tryon_form(job_id, person_image=person, garment_image=garment))
    assert status == 202, body
    (callback,) = await receiver.await_callback(job_id, timeout=240)
    assert callback.fields["status"] == "succeeded", callback.fields
    return callback


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
async def test_the_largest_accepted_job_stays_within_the_workers_memory_budget(tmp_path, receiver, http, fmt):
    data = images.gradient(*LARGEST, fmt)
    assert len(data) < 20 * MiB  # within images.max_bytes, as an accepted upload is
    node = NodeProcess(tmp_path, receiver.url, {
        "worker": {"backend": "tests.support.comfyui:TestComfyUIBackend", "startup_timeout_s": 300,
                   "inference_timeout_s": 120},
        "model": {"custom": blend_settings(require_root())},
    }).start(timeout=300)
    try:
        # One small job first: what any first job costs (imports, first allocations) is not this one's.
        await run_job(http, node, receiver, f"small-{fmt}", noise_png(64, 48, seed=1), noise_png(16, 12, seed=2))
        job_id = f"largest-{fmt}"
        with PeakRss(node.worker_pid()) as rss:
            callback = await run_job(http, node, receiver, job_id, data, data)
        print(f"\n{fmt}: two {LARGEST[0]}x{LARGEST[1]} images, worker {rss.report()}")
        assert rss.rise <= BUDGET[fmt], rss.report()
        decoded = node.wait_event("inputs_decoded", job_id=job_id)
        for name in ("person_image", "garment_image"):
            # The graph got model.comfyui.input_max_pixels (2048 x 2048), not 36 MP.
            assert decoded[name] == {"format": fmt, "width": 6000, "height": 6000, "orientation": 1,
                                     "processed": [2048, 2048]}
        assert node.wait_event("comfyui_graph_executed", job_id=job_id)["produced_size"] == [2048, 2048]
        output = Image.open(io.BytesIO(callback.files["output_image"][2]))
        assert output.size == LARGEST  # images.output_size: person
    finally:
        assert node.stop() == 0, node.tail()
