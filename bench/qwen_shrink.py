"""How far the Qwen-Image-Edit models are cut down for a CPU run, and cutting a running engine.

The diffusion model's depth is read from its weight file, so a shrunk file is enough. The
text encoder's depth (Qwen2.5-VL's language layers and vision blocks) is fixed in the
engine's code, and so is the working resolution: `shrink_text_encoder` and
`shrink_working_resolution` change them in the process that runs the engine (the test
backend, tests/support/qwen.py) or builds its classes (bench/qwen_weights.py), so that the
files and the code agree. Importable without torch or the engine.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any


@dataclasses.dataclass(frozen=True)
class Shrink:
    """How far the model is cut down. FULL is the published model."""

    diffusion_blocks: int = 60  # written into the file: the engine reads the depth from it
    text_layers: int = 28  # fixed in the engine's code: the engine must be shrunk too
    vision_blocks: int = 32  # idem; the last kept block always uses full attention
    # The working resolution divided by this, in each direction: the engine's ~1 MP
    # preset list (FluxKontextImageScale) and the Qwen encoder's fixed 1024x1024 (reference
    # latents) and 384x384 (vision tower) totals. Not part of the files.
    resolution_divisor: int = 1

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


FULL = Shrink()
# What CI runs on 2 CPU cores: one diffusion block, one language layer, two vision blocks
# (the first windowed, the second full attention), 1/8 of the resolution each way.
CI = Shrink(diffusion_blocks=1, text_layers=1, vision_blocks=2, resolution_divisor=8)
SIZES = {"full": FULL, "ci": CI}


def shrink_text_encoder(shrink: Shrink) -> None:
    """Cut the engine's Qwen2.5-VL to `shrink`'s depth in this process (FULL puts it back).

    Its depth is fixed in code: the language model's `Qwen25_7BVLI_Config` and the vision
    tower's `Qwen2VLVisionTransformer` defaults. Both are looked up by name when the model
    is built, so subclasses with other defaults take their place. The vision tower uses
    windowed attention except in blocks 7, 15, 23 and 31; the kept blocks keep those that
    exist, and the last kept block always attends fully, so both kinds run.
    """
    import comfy.text_encoders.llama as llama
    from comfy.text_encoders import qwen_vl

    base_config = getattr(llama, "_gpu_server_full_config", llama.Qwen25_7BVLI_Config)
    base_vision = getattr(qwen_vl, "_gpu_server_full_vision", qwen_vl.Qwen2VLVisionTransformer)
    llama._gpu_server_full_config = base_config
    qwen_vl._gpu_server_full_vision = base_vision
    if (shrink.text_layers, shrink.vision_blocks) == (FULL.text_layers, FULL.vision_blocks):
        llama.Qwen25_7BVLI_Config, qwen_vl.Qwen2VLVisionTransformer = base_config, base_vision
        return

    @dataclasses.dataclass
    class ShrunkConfig(base_config):  # type: ignore[valid-type, misc]
        num_hidden_layers: int = shrink.text_layers

    class ShrunkVision(base_vision):  # type: ignore[valid-type, misc]
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("num_layers", shrink.vision_blocks)
            super().__init__(*args, **kwargs)
            last = len(self.blocks) - 1
            self.fullatt_block_indexes = sorted({i for i in self.fullatt_block_indexes if i < last} | {last})

    llama.Qwen25_7BVLI_Config = ShrunkConfig
    qwen_vl.Qwen2VLVisionTransformer = ShrunkVision


class _ScaledSqrt:
    """`math` for one node module, whose `sqrt` also divides the result: the Qwen encode
    node sizes its images as sqrt(fixed total / image area), so this divides each side."""

    def __init__(self, divisor: int) -> None:
        self.divisor = divisor

    def sqrt(self, value: float) -> float:
        return math.sqrt(value) / self.divisor

    def __getattr__(self, name: str) -> Any:
        return getattr(math, name)


def shrink_working_resolution(divisor: int, node_types: dict[str, type]) -> None:
    """Divide the workflow's working resolution by `divisor` each way, in this process.

    FluxKontextImageScale picks the nearest of its ~1 MP presets (a module list, scaled
    here to multiples of 16); TextEncodeQwenImageEditPlus scales every image to fixed
    totals, 1024x1024 for the reference latents and 384x384 for the vision tower (its
    module's `math.sqrt` divides them). Everything after that follows the image sizes.
    """
    if divisor == 1:
        return
    flux = sys.modules[node_types["FluxKontextImageScale"].__module__]
    qwen = sys.modules[node_types["TextEncodeQwenImageEditPlus"].__module__]
    presets = getattr(flux, "_gpu_server_full_presets", list(flux.PREFERED_KONTEXT_RESOLUTIONS))
    flux._gpu_server_full_presets = presets
    flux.PREFERED_KONTEXT_RESOLUTIONS[:] = scaled_presets(presets, divisor)
    qwen.math = _ScaledSqrt(divisor)
    scale = node_types.get("GpuServerQwenReferenceScale")  # the node's copy of the encoder's sizing
    if scale is not None:
        sys.modules[scale.__module__].math = _ScaledSqrt(divisor)


def scaled_presets(presets: list[tuple[int, int]], divisor: int) -> list[tuple[int, int]]:
    return [(max(16, round(w / divisor / 16) * 16), max(16, round(h / divisor / 16) * 16)) for w, h in presets]

