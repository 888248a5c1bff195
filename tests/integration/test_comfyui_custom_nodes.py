"""Custom node packs (`model.comfyui.custom_nodes`): a tiny pack written into a temporary folder
runs in a job through the real node; a pack that fails to import is named at start, and a
workflow that needs it fails the start saying so."""

from __future__ import annotations

import io
import json

import numpy
import pytest
from PIL import Image

from ipc.messages import StartupFailed
from tests.support.client import submit, tryon_form
from tests.support.comfyui import noise_png, require_root
from tests.support.node import NodeProcess
from tests.support.worker_harness import WorkerHarness

BACKEND = "tests.support.comfyui:TestComfyUIBackend"
# A pack as packs are written: classic node classes in NODE_CLASS_MAPPINGS, and a web route
# added at import through the engine's PromptServer.instance (the node runs no web server:
# the worker's stand-in takes it).
TINY_PACK = '''
from server import PromptServer


class Invert:
    CATEGORY = "gpu_server_tests"
    FUNCTION = "invert"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def invert(self, image):
        return (1.0 - image,)


@PromptServer.instance.routes.get("/gpu-server-tiny-pack")
async def hello(request):
    return None


NODE_CLASS_MAPPINGS = {"GpuServerTinyInvert": Invert}
'''
BROKEN_PACK = 'raise ImportError("this pack needs a package that is not installed")\n'
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "garment.png"}},
    "3": {"class_type": "GpuServerTinyInvert", "inputs": {"image": ["1", 0]}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "tryon"}},
}


def settings(tmp_path, workflow: dict) -> dict:
    packs = tmp_path / "packs"
    (packs / "tiny_pack").mkdir(parents=True)
    (packs / "tiny_pack" / "__init__.py").write_text(TINY_PACK)
    (packs / "broken_pack").mkdir()
    (packs / "broken_pack" / "__init__.py").write_text(BROKEN_PACK)
    (tmp_path / "flow.json").write_text(json.dumps(workflow))
    return {
        "path": str(require_root()), "workflow": str(tmp_path / "flow.json"), "custom_nodes": [str(packs)],
        "inputs": {"person_image": {"node": "1", "input": "image"}, "garment_image": {"node": "2", "input": "image"}},
        "output": {"node": "4", "input": "images"},
    }


@pytest.fixture(scope="module")
def pack_node(tmp_path_factory, receiver):
    work = tmp_path_factory.mktemp("packs")
    proc = NodeProcess(work, receiver.url, {
        "worker": {"backend": BACKEND, "startup_timeout_s": 300},
        "model": {"custom": settings(work, WORKFLOW)},
    }).start(timeout=300)
    yield proc
    assert proc.stop() == 0, proc.tail()


def pixels(png: bytes) -> numpy.ndarray:
    return numpy.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=numpy.int16)


async def test_a_packs_node_runs_in_a_job(pack_node, receiver, http):
    person = noise_png(40, 30, seed=5)
    status, _, body = await submit(http, pack_node.base_url, tryon_form("pack-1", person_image=person,
                                                                          garment_image=noise_png(8, 8, seed=6)))
    assert status == 202, body
    (callback,) = await receiver.await_callback("pack-1")
    assert callback.fields["status"] == "succeeded", callback.fields
    # The pack's node inverted the person image.
    assert numpy.abs(pixels(callback.files["output_image"][2]) - (255 - pixels(person))).max() <= 1


def test_a_pack_that_fails_to_import_is_named_at_start(pack_node):
    loaded = pack_node.wait_event("comfyui_custom_nodes")
    # The listed folder's packs, and those of the root's own custom_nodes/ (what `true` loads).
    assert sorted(loaded["loaded"]) == ["tiny_pack", "websocket_image_save.py"]
    assert loaded["failed"] == ["broken_pack"]
    failed = pack_node.wait_event("comfyui_custom_node_failed")
    assert failed["pack"] == "broken_pack"
    assert "this pack needs a package that is not installed" in failed["error"]
    assert failed["level"] == "ERROR"


def test_a_workflow_that_needs_a_failed_pack_fails_the_start_naming_it(tmp_path):
    workflow = {**WORKFLOW, "3": {"class_type": "GpuServerBrokenNode", "inputs": {"image": ["1", 0]}}}
    harness = WorkerHarness(tmp_path, BACKEND, settings(tmp_path, workflow)).start()
    try:
        failure = harness.receive(timeout=300)
        assert isinstance(failure, StartupFailed), failure
        assert "node type 'GpuServerBrokenNode' is not available" in failure.message
        assert ("custom node packs that failed to import: broken_pack (ImportError: this pack needs a package "
                "that is not installed)") in failure.message
        assert harness.process.wait(30) == 4
    finally:
        harness.stop()
