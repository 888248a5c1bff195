"""Our two ComfyUI nodes: the job's images in, the result image out, both in memory.

Plain node classes in ComfyUI's classic style (INPUT_TYPES, RETURN_TYPES, FUNCTION), which
every engine generation still loads, so output capture does not depend on the history or
SaveImage details that change between versions. They meet the backend through an
`Exchange`: the backend puts the decoded images under per-job keys before running the
graph and takes the captured output afterwards.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from comfyui_config.workflow import IMAGE_INPUT_NODE, IMAGE_OUTPUT_NODE

CATEGORY = "gpu_server"


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

    return {IMAGE_INPUT_NODE: ImageInput, IMAGE_OUTPUT_NODE: ImageOutput}


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
