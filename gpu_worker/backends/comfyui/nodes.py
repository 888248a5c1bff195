"""Our ComfyUI nodes: the job's images in, the result image out, both in memory; and the
person's canvas at the size the Qwen edit encoder gives its reference latent.

Plain node classes in ComfyUI's classic style (INPUT_TYPES, RETURN_TYPES, FUNCTION), which
every engine generation still loads, so output capture does not depend on the history or
SaveImage details that change between versions. They meet the backend through an
`Exchange`: the backend puts the decoded images under per-job keys before running the
graph and takes the captured output afterwards.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import torch

from comfyui_config.workflow import IMAGE_INPUT_NODE, IMAGE_OUTPUT_NODE

CATEGORY = "gpu_server"
REFERENCE_SCALE_NODE = "GpuServerQwenReferenceScale"
# TextEncodeQwenImageEditPlus (comfy_extras/nodes_qwen.py, 0.3.75 and upstream alike) scales
# each image to this many pixels in multiples of REFERENCE_MULTIPLE for its reference latents.
REFERENCE_TOTAL_PIXELS = 1024 * 1024
REFERENCE_MULTIPLE = 8


def _encoder_size(width: int, height: int, divisor: int = 1) -> tuple[int, int]:
    # The encoder's own arithmetic (this module's `math`: a shrunk test engine divides its
    # sqrt; `divisor` does the same for a caller that computes sizes outside the engine).
    scale = math.sqrt(REFERENCE_TOTAL_PIXELS / (width * height)) / divisor
    return (round(width * scale / REFERENCE_MULTIPLE) * REFERENCE_MULTIPLE,
            round(height * scale / REFERENCE_MULTIPLE) * REFERENCE_MULTIPLE)


def reference_size(width: int, height: int, divisor: int = 1) -> tuple[int, int]:
    """The size the encoder leaves as it is, reached from (width, height) by its own re-scale:
    an image of this size becomes a reference latent of the same size."""
    size = _encoder_size(width, height, divisor)
    for _ in range(8):  # one step for every preset; bounded all the same
        again = _encoder_size(*size, divisor)
        if again == size:
            break
        size = again
    return size


class QwenReferenceScale:
    """The person's canvas and its reference latent the same size.

    FluxKontextImageScale picks one of its ~1 MP presets; TextEncodeQwenImageEditPlus then
    re-scales every image to 1024x1024 total pixels in multiples of 8 for its reference
    latents, which moves six presets (832x1248 becomes 840x1256). A start latent sized from
    the preset would then differ from the person's reference latent by a few pixels: softer,
    re-synthesised detail. This node applies that re-scale once, before both (the same
    "area" resampling the encoder would do, so the reference latent is unchanged), and the
    encoder's own re-scale is then the identity. For the presets that do not move it hands
    the image on as it is: the same pixels as without it."""

    CATEGORY = CATEGORY
    FUNCTION = "scale"
    RETURN_TYPES = ("IMAGE",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",)}}

    def scale(self, image):
        height, width = int(image.shape[1]), int(image.shape[2])
        target = reference_size(width, height)
        if target == (width, height):
            return (image,)
        import comfy.utils

        scaled = comfy.utils.common_upscale(image.movedim(-1, 1), target[0], target[1], "area", "disabled")
        return (scaled.movedim(1, -1),)


class Exchange:
    """Tensors handed between the backend and the nodes, by key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items[key] = value

    def get(self, key: str) -> Any:
        with self._lock:
            try:
                return self._items[key]
            except KeyError:
                raise KeyError(f"no image under {key!r} (not put by the backend for this job)") from None

    def pop(self, key: str, default: Any = None) -> Any:
        with self._lock:
            return self._items.pop(key, default)


def node_classes(exchange: Exchange) -> dict[str, type]:
    """The classes to register under their names in the engine's NODE_CLASS_MAPPINGS."""

    class ImageInput:
        """Stands in for LoadImage: same outputs (IMAGE [1,H,W,3] in 0..1, MASK)."""

        CATEGORY = CATEGORY
        FUNCTION = "load"
        RETURN_TYPES = ("IMAGE", "MASK")
        RETURN_NAMES = ("IMAGE", "MASK")

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"key": ("STRING", {"default": ""})}}

        def load(self, key: str):
            image = exchange.get(key)
            # No alpha channel after decoding: LoadImage's "nothing masked" for that case.
            mask = torch.zeros((1, 64, 64), dtype=torch.float32, device="cpu")
            return (image, mask)

    class ImageOutput:
        """Captures the first image of the batch it receives."""

        CATEGORY = CATEGORY
        FUNCTION = "capture"
        RETURN_TYPES = ()
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"images": ("IMAGE",), "key": ("STRING", {"default": ""})}}

        def capture(self, images, key: str):
            exchange.put(key, images[0].detach())
            return ()

    return {IMAGE_INPUT_NODE: ImageInput, IMAGE_OUTPUT_NODE: ImageOutput, REFERENCE_SCALE_NODE: QwenReferenceScale}


def to_tensor(image) -> torch.Tensor:
    """A PIL RGB image as ComfyUI's IMAGE: float32 [1, H, W, 3] in 0..1, on the CPU.

    One float buffer, divided in place (the same float32 values as LoadImage's
    `numpy.array(i).astype(numpy.float32) / 255.0`, without its second float copy)."""
    import numpy

    pixels = torch.from_numpy(numpy.array(image))  # uint8, writable: torch shares it
    return pixels.to(torch.float32).div_(255.0)[None]


def to_pil(image: torch.Tensor):
    """ComfyUI's IMAGE [H, W, C] in 0..1 (any device) as a PIL RGB image."""
    from PIL import Image

    pixels = image.float().mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(pixels).convert("RGB")
