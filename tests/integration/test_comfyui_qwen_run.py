"""The shipped Qwen-Image-Edit workflow, executed: conf/workflows/qwen_image_edit_tryon.json
with the production mapping, through the real node (supervisor, worker, ComfyUI's engine on
CPU, callback receiver), on random-weight files of the published names, layouts and dtypes
(bench/qwen_weights.py), shrunk to fit 2 cores (tests/support/qwen.py, docs/development.md,
"ComfyUI in the tests"): the diffusion model, text encoder with its vision tower, VAE, the Lightning LoRA
merged into fp8 weights, and our in-memory image nodes all run for real. The graph does no
work that cannot change its output: a second node on the graph as it was before that work
was taken out (tests/support/workflows/qwen_image_edit_tryon_unpruned.json) gives the same
pixels for the same seed, with twice the text encodes."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy
import pytest

from bench.qwen_shrink import CI
from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.comfyui import WORKFLOWS, require_root
from tests.support.node import TOKEN, NodeProcess
from tests.support.qwen import ensure_test_weights, expected_output_size, output_image, qwen_settings

pytestmark = pytest.mark.timeout(600)  # the first test also waits for the weights and the warm-up
BACKEND = "tests.support.qwen:QwenTestBackend"
LOADERS = ("37", "38", "39", "89")  # UNETLoader, CLIPLoader, VAELoader, LoraLoaderModelOnly
LOADS = ("load_diffusion_model", "load_text_encoder", "load_vae", "load_lora")
PERSON_SIZE = (384, 512)  # upright: a portrait
# As a phone stores a portrait: 512x384 pixels on their side, EXIF orientation 6.
PERSON, GARMENT = images.taken_turned(images.person(*PERSON_SIZE), 6), images.garment()
# What one job costs in engine calls with the shipped graph: the prompt (111) runs the text
# encoder once, its vision tower on both images, and the VAE encoder on both images for the
# reference latents; 4 steps at cfg 1 are 4 model calls; one VAE decode. The negative (110)
# is the prompt's conditioning zeroed (cfg 1 never reads it), and the start latent (88) an
# empty one of the scaled person's size (at denoise 1 the sampler starts from pure noise).
JOB_CALLS = {"text_encoder": 1, "vision_tower": 2, "diffusion_model": 4, "vae_encode": 2, "vae_decode": 1}
# The same graph before that (the negative encoded like the prompt, the start latent
# VAE-encoded from the person): twice the text encodes, 5 VAE encodes.
UNPRUNED = WORKFLOWS / "qwen_image_edit_tryon_unpruned.json"
UNPRUNED_CALLS = {"text_encoder": 2, "vision_tower": 4, "diffusion_model": 4, "vae_encode": 5, "vae_decode": 1}


@pytest.fixture(scope="module")
def root():
    return require_root()


@pytest.fixture(scope="module")
def qwen_node(tmp_path_factory, receiver, root):
    models = ensure_test_weights(CI)
    proc = NodeProcess(tmp_path_factory.mktemp("qwen"), receiver.url, {
        "worker": {"backend": BACKEND, "startup_timeout_s": 600, "inference_timeout_s": 300},
        "model": {"custom": qwen_settings(root, models)},  # warm-up on, as in production
    }).start(timeout=600)
    proc.first_worker_pid = proc.worker_pid()
    yield proc
    code = proc.stop()
    assert code == 0, proc.tail()


async def run_job(http, node, receiver, job_id: str, seed: int = 7):
    status, _, body = await submit(http, node.base_url, tryon_form(
        job_id, person_image=PERSON, garment_image=GARMENT, config={"seed": seed}))
    assert status == 202, body
    (callback,) = await receiver.await_callback(job_id, timeout=300)
    return callback


def job_calls(node, job_id: str) -> dict[str, int]:
    return node.wait_event("qwen_test_job_calls", job_id=job_id)["calls"]


@pytest.fixture(scope="module")
def first_job(qwen_node, receiver):
    """The first job's callback (the tests after it compare with it)."""

    async def first():
        async with aiohttp.ClientSession() as http:
            return await run_job(http, qwen_node, receiver, "qwen-1")

    return asyncio.run(first())


def test_the_warm_up_loaded_every_model_once_before_ready(qwen_node):
    warmup = job_calls(qwen_node, "warmup")
    assert {name: warmup[name] for name in LOADS} == dict.fromkeys(LOADS, 1)
    assert qwen_node.events("comfyui_warmed_up")
    shrunk = qwen_node.wait_event("qwen_test_engine_shrunk")
    assert shrunk["shrink"] == CI.as_dict() and shrunk["fp8_diffusion_storage"] is True
    # The engine kept the diffusion model in fp8 and merged the LoRA into it there.
    messages = [e.get("message", "") for e in qwen_node.events("log")]
    assert "model weight dtype torch.float8_e4m3fn, manual cast: torch.float32" in messages
    assert not [m for m in messages if m.startswith(("clip missing", "Missing VAE keys", "left over keys"))]


async def test_a_job_brings_back_an_image_of_the_expected_size(qwen_node, first_job, root):
    fields = first_job.fields
    assert fields["status"] == "succeeded", fields
    image = output_image(first_job)
    # images.output_size `person`: the upright person photo's size, whatever the graph's.
    assert image.size == PERSON_SIZE
    pixels = numpy.asarray(image.convert("RGB"), dtype=numpy.float64)
    assert pixels.std() > 1.0  # noise from random weights, not a blank (NaN or constant) frame
    executed = qwen_node.wait_event("comfyui_graph_executed", job_id="qwen-1")
    # The graph sampled at the preset nearest the person's aspect (shrunk here): a portrait
    # one, so it saw the photo upright (stored sideways, it would have been a landscape one).
    produced = expected_output_size(root, PERSON_SIZE, CI.resolution_divisor)
    assert tuple(executed["produced_size"]) == produced and produced[0] < produced[1]
    assert expected_output_size(root, PERSON_SIZE[::-1], CI.resolution_divisor) == produced[::-1]
    assert set(LOADERS) <= set(executed["cached_nodes"])  # loaded at warm-up, not again
    # Per-node seconds, for the nodes that ran: the prompt's encode, the sampler, the VAE decode.
    assert {"3", "8", "111"} <= set(executed["node_seconds"])
    assert not set(LOADERS) & set(executed["node_seconds"])
    assert job_calls(qwen_node, "qwen-1") == {**JOB_CALLS, **dict.fromkeys(LOADS, 0)}


def wait_for_sampling_step(node, job_id: str, timeout: float) -> None:
    """Until the node reports the job's first sampler step (its progress, from the engine's hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, job = node.get(f"/jobs/{job_id}", token=TOKEN)
        assert code == 200 and job["state"] in ("queued", "running"), job
        if job["progress"] is not None and job["progress"]["step"] >= 1:
            return
        time.sleep(0.05)  # a poll interval: the node offers no push for this short of events.url
    raise AssertionError(f"no sampler step of {job_id} within {timeout} s")


async def test_delete_during_sampling_cancels_the_job_and_the_worker_stays(qwen_node, first_job, receiver, http):
    form = tryon_form("qwen-cancel", person_image=PERSON, garment_image=GARMENT)
    status, _, body = await submit(http, qwen_node.base_url, form)
    assert status == 202, body
    await asyncio.to_thread(wait_for_sampling_step, qwen_node, "qwen-cancel", 300)
    async with http.delete(f"{qwen_node.base_url}/jobs/qwen-cancel", headers={"X-Internal-Auth": TOKEN}) as response:
        assert response.status == 202, await response.text()
    (callback,) = await receiver.await_callback("qwen-cancel", timeout=300)
    assert (callback.fields["status"], callback.fields["error_code"]) == ("cancelled", "cancelled")
    assert qwen_node.wait_event("comfyui_graph_executed", job_id="qwen-cancel")["success"] is False
    assert job_calls(qwen_node, "qwen-cancel")["vae_decode"] == 0  # interrupted inside the sampler
    assert qwen_node.worker_pid() == qwen_node.first_worker_pid
    assert qwen_node.get("/health")[0] == 200


async def test_a_second_job_reuses_the_loaded_models_and_repeats_the_first(qwen_node, first_job, receiver, http):
    # Same images and seed as the first job, after a cancel, on the same worker.
    callback = await run_job(http, qwen_node, receiver, "qwen-2")
    assert callback.fields["status"] == "succeeded", callback.fields
    assert qwen_node.worker_pid() == qwen_node.first_worker_pid
    executed = qwen_node.wait_event("comfyui_graph_executed", job_id="qwen-2")
    assert set(LOADERS) <= set(executed["cached_nodes"])
    assert job_calls(qwen_node, "qwen-2") == {**JOB_CALLS, **dict.fromkeys(LOADS, 0)}
    # The engine's load log: each model was built once in the life of the worker.
    messages = [e.get("message", "") for e in qwen_node.events("log")]
    assert sum(m.startswith("model weight dtype") for m in messages) == 1
    assert sum(m.startswith("CLIP/text encoder model load device") for m in messages) == 1
    # A fixed seed gives the same pixels: nothing of the cancelled job leaked into this one.
    assert numpy.array_equal(numpy.asarray(output_image(callback)), numpy.asarray(output_image(first_job)))


async def test_the_graph_gives_the_same_pixels_as_before_its_idle_work_was_taken_out(
        first_job, receiver, http, tmp_path, root):
    # A second node on the unpruned graph; no warm-up (its first job loads the models).
    node = NodeProcess(tmp_path, receiver.url, {
        "worker": {"backend": BACKEND, "startup_timeout_s": 600, "inference_timeout_s": 300},
        "model": {"custom": qwen_settings(root, ensure_test_weights(CI), workflow=str(UNPRUNED), warmup=False)},
    }).start(timeout=600)
    try:
        callback = await run_job(http, node, receiver, "qwen-unpruned")  # the first job's images and seed
        assert callback.fields["status"] == "succeeded", callback.fields
        assert numpy.array_equal(numpy.asarray(output_image(callback)), numpy.asarray(output_image(first_job)))
        calls = job_calls(node, "qwen-unpruned")
        assert {name: calls[name] for name in UNPRUNED_CALLS} == UNPRUNED_CALLS
    finally:
        assert node.stop() == 0, node.tail()
