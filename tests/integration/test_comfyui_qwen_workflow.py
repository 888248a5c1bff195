"""The shipped Qwen-Image-Edit workflow and production mapping, checked by the real worker
on ComfyUI's real engine with empty placeholder files named as the model files (no job
runs: warm-up off). Every node type it uses exists in the vendored 0.3.75."""

from __future__ import annotations

import json

import pytest

from ipc.messages import Ready, StartupFailed
from supervisor import config as config_module
from tests.support.comfyui import require_root
from tests.support.node import REPO
from tests.support.qwen import PRODUCTION_CONFIG, PRODUCTION_ENVIRON
from tests.support.worker_harness import WorkerHarness

CONF = REPO / "conf"
# Loader node type -> (its file input, the model folder it reads from).
LOADERS = {
    "UNETLoader": ("unet_name", "diffusion_models"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "VAELoader": ("vae_name", "vae"),
    "LoraLoaderModelOnly": ("lora_name", "loras"),
}


def model_files(workflow: dict) -> dict[str, str]:
    """File name -> model folder, for every loader in the workflow."""
    files = {}
    for node in workflow.values():
        if node["class_type"] in LOADERS:
            field, folder = LOADERS[node["class_type"]]
            files[node["inputs"][field]] = folder
    return files


@pytest.fixture
def production_settings(tmp_path):
    """model.comfyui of conf/config.production.yaml, on the vendored engine and a models
    folder of empty placeholders."""
    root = require_root()
    loaded = config_module.load(PRODUCTION_CONFIG, environ=PRODUCTION_ENVIRON)
    settings = dict(loaded.config.model.comfyui)
    workflow = json.loads((CONF / settings["workflow"]).read_text())
    models = tmp_path / "models"
    for name, folder in model_files(workflow).items():
        (models / folder).mkdir(parents=True, exist_ok=True)
        (models / folder / name).touch()
    settings.update(path=str(root), models_dir=str(models), warmup=False)
    return settings, models, workflow


def start(tmp_path, settings) -> tuple[WorkerHarness, object]:
    harness = WorkerHarness(tmp_path, "tests.support.comfyui:TestComfyUIBackend", settings, config_dir=CONF).start()
    return harness, harness.receive(timeout=300)


def test_the_shipped_workflow_uses_the_documented_model_files(production_settings):
    _, _, workflow = production_settings
    assert model_files(workflow) == {
        "qwen_image_edit_2509_fp8_e4m3fn.safetensors": "diffusion_models",
        "qwen_2.5_vl_7b_fp8_scaled.safetensors": "text_encoders",
        "qwen_image_vae.safetensors": "vae",
        "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors": "loras",
    }


def test_the_shipped_workflow_and_mapping_pass_the_engines_checks(tmp_path, production_settings):
    settings, _, _ = production_settings
    harness, answer = start(tmp_path, settings)
    try:
        assert isinstance(answer, Ready), f"{answer}\n{harness.tail()}"
        assert answer.comfyui_version == "0.3.75"
        assert answer.model_version == "comfyui:qwen_image_edit_tryon"
        # The production engine options pass the engine's own parser and are in force (with
        # the CPU the node chose here; none of them changes what a CPU computes but attention).
        assert answer.engine_options == {
            "cpu": True, "gpu_only": True, "fast": ["fp8_matrix_mult"], "use_pytorch_cross_attention": True,
        }
        assert answer.gpu_compute_capability is None
    finally:
        harness.stop()


def test_a_missing_model_file_is_a_startup_failure_naming_it(tmp_path, production_settings):
    settings, models, _ = production_settings
    (models / "loras" / "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors").unlink()
    harness, answer = start(tmp_path, settings)
    try:
        assert isinstance(answer, StartupFailed), answer
        assert "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors" in answer.message
        assert "node '89' (LoraLoaderModelOnly)" in answer.message
        assert harness.process.wait(30) == 4  # the worker exits after reporting
    finally:
        harness.stop()
