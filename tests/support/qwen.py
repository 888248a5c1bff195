"""The shipped Qwen-Image-Edit workflow on random weights, in the real worker, on CPU.

`QwenTestBackend` (`worker.backend: tests.support.qwen:QwenTestBackend`) is the production
ComfyUI backend plus what a CPU run of the full graph needs and what tests measure with.
Its settings are production's `model.comfyui` with one more key, `qwen_test` (taken out
before the production settings are parsed):

    qwen_test: {shrink: {diffusion_blocks, text_layers, vision_blocks, resolution_divisor},
                fp8_diffusion_storage: true}

When the engine has started, before the workflow is checked or run, it
- shrinks the engine's text encoder (language layers, vision blocks: fixed in code) and
  the working resolution to `shrink` (bench/qwen_shrink.py; the diffusion model's depth
  comes from the weight files, written with the same shrink);
- with `fp8_diffusion_storage`, keeps the diffusion model's weights in fp8 on the CPU too
  (the engine's `--fp8_e4m3fn-unet`), so the fp8 path and the LoRA merge into fp8 weights
  run as on a GPU (the engine alone would upcast a small fp8 model to float32 on a CPU);
- counts calls into the engine's model code (CALLS) and logs, per job (and for the
  warm-up), one `qwen_test_job_calls` event: how many times the text encoder, its vision
  tower, the diffusion model and the VAE ran, and whether a model file was loaded again
  (the production backend's `comfyui_graph_executed` has the per-node seconds);
A test knows that sampling is under way from the node itself: the sampler's steps reach
`GET /jobs/{id}` (`progress`) through the production backend's progress hook.

`ensure_test_weights()` writes the random-weight files once per version into `.venv/`;
`qwen_settings()` makes the settings (any key of production's section can be overridden,
e.g. `workflow=` another file, `warmup=False`).

Measuring with it (tests/integration/test_comfyui_qwen_run.py does all of these):
- engine calls per job: `node.wait_event("qwen_test_job_calls", job_id=...)["calls"]`
  (`text_encoder` counts language-model passes, one per prompt encode);
- per-node work: `comfyui_graph_executed` (`cached_nodes`, `node_seconds`);
- a fixed seed's output: same person, garment and seed give the same pixels in one worker
  and across workers on one machine (`output_image(callback)`, compare arrays);
- the worker's memory: `/gpu/status` names its pid; the test backend adds nothing per job.
"""

from __future__ import annotations

import ast
import io
import threading
from pathlib import Path
from typing import Any

from bench import qwen_shrink, qwen_weights
from bench.qwen_shrink import CI, Shrink
from gpu_worker.engine import BackendContext
from ipc.jsonlog import EventLog
from tests.support.comfyui import TestComfyUIBackend
from tests.support.node import REPO

events = EventLog("tests.qwen")
WEIGHTS_CACHE = REPO / ".venv" / "qwen-random-weights"
TEST_KEY = "qwen_test"
PRODUCTION_CONFIG = REPO / "conf" / "config.production.yaml"
# What conf/config.production.yaml reads from the environment, for loading it in a test.
PRODUCTION_ENVIRON = {
    "GPU_SERVER_NODE_ID": "gpu-1", "GPU_SERVER_TOKEN": "t" * 24,
    "GPU_SERVER_CALLBACK_URL": "http://127.0.0.1:9/cb", "GPU_SERVER_CALLBACK_TOKEN": "c",
}

# Counted calls: name -> (module, attribute path of the callable). The text encoder is the
# language model's forward (one per encode), the vision tower's runs once per image.
CALLS = {
    "text_encoder": ("comfy.text_encoders.llama", "Qwen25_7BVLI.forward"),
    "vision_tower": ("comfy.text_encoders.qwen_vl", "Qwen2VLVisionTransformer.forward"),
    "diffusion_model": ("comfy.ldm.qwen_image.model", "QwenImageTransformer2DModel.forward"),
    "vae_encode": ("comfy.sd", "VAE.encode"),
    "vae_decode": ("comfy.sd", "VAE.decode"),
    # Loads of the four files: each a cost a job must not pay again.
    "load_diffusion_model": ("comfy.sd", "load_diffusion_model"),
    "load_text_encoder": ("comfy.sd", "load_clip"),
    "load_vae": ("comfy.sd", "VAE.__init__"),
    "load_lora": ("comfy.sd", "load_lora_for_models"),
}


def ensure_test_weights(shrink: Shrink = CI, seed: int = 0) -> Path:
    """A models_dir with the random-weight files for `shrink`, cached under .venv/."""
    return qwen_weights.ensure_weights(WEIGHTS_CACHE, shrink, seed)


def production_comfyui() -> dict:
    """`model.comfyui` of conf/config.production.yaml as the supervisor reads it, with the
    workflow's path made absolute (it is relative to conf/)."""
    from supervisor import config as config_module

    loaded = config_module.load(PRODUCTION_CONFIG, environ=PRODUCTION_ENVIRON)
    settings = dict(loaded.config.model.comfyui)
    settings["workflow"] = str((PRODUCTION_CONFIG.parent / settings["workflow"]).resolve())
    return settings


def qwen_settings(root: Path, models_dir: Path, shrink: Shrink = CI, **overrides: Any) -> dict:
    """`model.custom` for QwenTestBackend: production's `model.comfyui` (workflow, mapping,
    warm-up) on the test engine and the random-weight files, shrunk to `shrink`."""
    settings = production_comfyui()
    settings.update(path=str(root), models_dir=str(models_dir), **overrides)
    settings[TEST_KEY] = {"shrink": shrink.as_dict(), "fp8_diffusion_storage": True}
    return settings


def kontext_presets(root: Path) -> list[tuple[int, int]]:
    """FluxKontextImageScale's preset sizes, read from the engine's source (not imported)."""
    source = (root / "comfy_extras" / "nodes_flux.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PREFERED_KONTEXT_RESOLUTIONS":
            return [tuple(pair) for pair in ast.literal_eval(node.value)]
    raise AssertionError("no PREFERED_KONTEXT_RESOLUTIONS in nodes_flux.py")


def expected_output_size(root: Path, person_size: tuple[int, int], divisor: int) -> tuple[int, int]:
    """The workflow's output size for a person image: the preset nearest its aspect ratio, at
    the size the encoder gives its reference latent (node 114; the graph samples at that
    canvas), at the shrunk resolution."""
    from gpu_worker.backends.comfyui.nodes import reference_size

    presets = qwen_shrink.scaled_presets(kontext_presets(root), divisor) if divisor > 1 else kontext_presets(root)
    aspect = person_size[0] / person_size[1]
    _, width, height = min((abs(aspect - w / h), w, h) for w, h in presets)
    return reference_size(width, height, divisor)


def output_image(callback):
    """The callback's output image, decoded (PIL)."""
    from PIL import Image

    _, content_type, data = callback.files["output_image"]
    assert content_type == "image/png", content_type
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


class CallCounter:
    """Wraps engine callables (once per process) and counts their calls."""

    def __init__(self) -> None:
        self.counts = {name: 0 for name in CALLS}
        self._lock = threading.Lock()

    def install(self) -> None:
        import importlib

        for name, (module_name, path) in CALLS.items():
            owner: Any = importlib.import_module(module_name)
            *parents, attribute = path.split(".")
            for parent in parents:
                owner = getattr(owner, parent)
            setattr(owner, attribute, self._counted(name, getattr(owner, attribute)))

    def _counted(self, name: str, function):
        def counted(*args, **kwargs):
            with self._lock:
                self.counts[name] += 1
            return function(*args, **kwargs)

        counted.__wrapped__ = function
        return counted

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


class QwenTestBackend(TestComfyUIBackend):
    def __init__(self, context: BackendContext) -> None:
        settings = dict(context.settings)
        test = settings.pop(TEST_KEY, None) or {}
        super().__init__(context._replace(settings=settings))
        self.shrink = Shrink(**test.get("shrink", {}))
        self.fp8_diffusion_storage = bool(test.get("fp8_diffusion_storage", False))
        self.calls = CallCounter()

    def engine_started(self) -> None:
        from comfy.cli_args import args

        qwen_shrink.shrink_text_encoder(self.shrink)
        qwen_shrink.shrink_working_resolution(self.shrink.resolution_divisor, self.runtime.node_types)
        if self.fp8_diffusion_storage:
            args.fp8_e4m3fn_unet = True  # read when the diffusion model loads
        self.calls.install()
        events.info("qwen_test_engine_shrunk", shrink=self.shrink.as_dict(),
                    fp8_diffusion_storage=self.fp8_diffusion_storage)

    def _warm_up(self) -> None:
        self._counted_run("warmup", super()._warm_up)

    def model(self, prepared, cancelled: threading.Event):
        # The calls of the model stage (the graph), where the engine's work is.
        return self._counted_run(prepared.inputs.job_id, lambda: super(QwenTestBackend, self).model(prepared, cancelled))

    def _counted_run(self, job_id: str, run):
        before = self.calls.snapshot()
        try:
            return run()
        finally:
            after = self.calls.snapshot()
            events.info("qwen_test_job_calls", job_id=job_id,
                        calls={name: after[name] - before[name] for name in after})
