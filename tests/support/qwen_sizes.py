"""The Qwen workflows' sizing nodes on the real engine, for every FluxKontextImageScale preset.

    python -m tests.support.qwen_sizes ROOT    (from the repository root; prints JSON)

Runs, in this process, only the nodes that decide sizes, the engine's own classes: a person
photo of each preset's exact aspect (1.5 times its size) through FluxKontextImageScale, then
our GpuServerQwenReferenceScale (node 114), the start latent's EmptySD3LatentImage from its
size, and TextEncodeQwenImageEditPlus with a text encoder and a VAE that only record the shapes
they are given (no model). For each preset: the canvas before and after node 114, the start
latent's shape and the person's reference latent's shape, and whether node 114 handed the
image on untouched. A child process of the test: ComfyUI is never imported into pytest's.
"""

from __future__ import annotations

import importlib
import json
import sys


class RecordingVAE:
    """Enough of comfy.sd.VAE for the encoder: a latent shaped as the real one would be."""

    def __init__(self, torch) -> None:
        self.torch = torch

    def encode(self, pixels):
        return self.torch.zeros(1, 16, pixels.shape[1] // 8, pixels.shape[2] // 8)


class ShapeOnlyClip:
    def __init__(self, torch) -> None:
        self.torch = torch

    def tokenize(self, text, images=None, llama_template=None, **kwargs):
        return {}

    def encode_from_tokens_scheduled(self, tokens):
        return [[self.torch.zeros(1, 1, 8), {}]]


def main(root: str) -> dict:
    from tests.support.comfyui import declare_torchvision_ops

    declare_torchvision_ops()
    sys.path.insert(0, root)
    from comfy import cli_args

    cli_args.args.cpu = True
    importlib.import_module("utils.extra_config")  # before `nodes`, as the runtime does
    import torch

    import comfy.model_management  # noqa: F401  (reads the options now)
    from comfy_extras import nodes_flux, nodes_qwen, nodes_sd3

    from gpu_worker.backends.comfyui.nodes import QwenReferenceScale

    results = []
    garment = torch.rand(1, 600, 500, 3)
    for width, height in list(nodes_flux.PREFERED_KONTEXT_RESOLUTIONS):
        photo = torch.rand(1, height * 3 // 2, width * 3 // 2, 3)
        preset = nodes_flux.FluxKontextImageScale.execute(photo).result[0]
        canvas = QwenReferenceScale().scale(preset)[0]
        start = nodes_sd3.EmptySD3LatentImage.execute(canvas.shape[2], canvas.shape[1], 1).result[0]["samples"]
        conditioning = nodes_qwen.TextEncodeQwenImageEditPlus.execute(
            ShapeOnlyClip(torch), "", vae=RecordingVAE(torch), image1=canvas, image2=garment).result[0]
        person_reference = conditioning[0][1]["reference_latents"][0]
        results.append({
            "preset": [width, height], "scaled": list(preset.shape[1:3][::-1]), "canvas": list(canvas.shape[1:3][::-1]),
            "start_latent": list(start.shape[-2:]), "reference_latent": list(person_reference.shape[-2:]),
            "untouched": canvas is preset,
        })
    return {"presets": results}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
