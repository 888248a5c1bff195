"""A graph with a real sampler for tests on ComfyUI's CPU engine, without model weights.

`tests/support/workflows/tiny_sampler.json`: the person image is encoded by a VAE, sampled
by the engine's own KSampler (seed and steps mapped from the job), decoded by the engine's
own VAEDecodeTiled (whose tile loop reports through the same progress hook as the sampler:
the node the hook's filter must leave out), and returned.

What would need weights comes from one test node, `GpuServerTestTinyModel`, with random
values (no download, no file): a real `comfy.model_base.BaseModel` (epsilon prediction, SD1.5
latent format) in a real `ModelPatcher`, whose denoiser is one small convolution; the
CONDITIONING the sampler wants (zeros); and a real `comfy.sd.VAE` of the engine's TAESD shape
(2.4 M parameters).

`SamplerTestBackend` (by import path, settings under `model.custom`) is the test backend of
`tests/support/comfyui.py` plus that node, and it logs every call the engine makes to the
progress hook (`test_progress_hook`, with the node that made it) before the backend's filter
sees it, so a test can show what was filtered out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ipc.jsonlog import EventLog
from tests.support.comfyui import WORKFLOWS, TestComfyUIBackend

SAMPLER_NODE, TILED_DECODE_NODE = "6", "7"
events = EventLog("tests.comfyui_sampler")


class TinyModel:
    CATEGORY = "gpu_server_tests"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "VAE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        import comfy.latent_formats
        import comfy.model_base
        import comfy.model_management as mm
        import comfy.model_patcher
        import comfy.sd
        import comfy.supported_models_base
        import comfy.taesd.taesd
        import torch

        # ComfyUI's layers skip weight init: every weight is set here, from a seed.
        generator = torch.Generator().manual_seed(0)

        class Denoiser(torch.nn.Module):
            dtype = torch.float32  # what ComfyUI asks a diffusion model for

            def __init__(self) -> None:
                super().__init__()
                self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
                with torch.no_grad():
                    self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator) * 0.05)
                    self.conv.bias.zero_()

            def forward(self, x, timesteps=None, context=None, **kwargs):
                return self.conv(x)

        class Config(comfy.supported_models_base.BASE):
            unet_config = {"disable_unet_model_creation": True}
            latent_format = comfy.latent_formats.SD15

        model = comfy.model_base.BaseModel(Config(Config.unet_config), device=mm.get_torch_device())
        model.diffusion_model = Denoiser()
        patcher = comfy.model_patcher.ModelPatcher(
            model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
        )
        vae_state = {
            name: torch.randn(p.shape, generator=generator) * 0.05
            for name, p in comfy.taesd.taesd.TAESD().state_dict().items() if p.ndim
        }
        vae_state.update(vae_scale=torch.tensor(1.0), vae_shift=torch.tensor(0.0))
        return (patcher, [[torch.zeros(1, 1, 8), {}]], comfy.sd.VAE(sd=vae_state))


def sampler_settings(root: Path) -> dict[str, Any]:
    return {
        "path": str(root),
        "workflow": str(WORKFLOWS / "tiny_sampler.json"),
        "inputs": {
            "person_image": {"node": "1", "input": "image"},
            "garment_image": {"node": "2", "input": "image"},
            "seed": {"node": SAMPLER_NODE, "input": "seed"},
            "steps": {"node": SAMPLER_NODE, "input": "steps"},
        },
        "output": {"node": "8", "input": "images"},
        "warmup": False,  # a 512x512 warm-up through the VAE costs seconds on a CPU; nothing to show
    }


class SamplerTestBackend(TestComfyUIBackend):
    def extra_nodes(self) -> dict[str, type]:
        return {**super().extra_nodes(), "GpuServerTestTinyModel": TinyModel}

    def load(self):
        info = super().load()
        import comfy.utils
        from comfy_execution.utils import get_executing_context

        assert self.progress is not None
        hook = self.progress.hook

        def logged(value, total, preview=None, *args, **kwargs):
            context = get_executing_context()
            events.info("test_progress_hook", node=context.node_id if context else None, value=value, total=total)
            hook(value, total, preview, *args, **kwargs)

        comfy.utils.set_progress_bar_global_hook(logged)
        return info
