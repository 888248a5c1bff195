"""A Qwen-Image-Edit-2511 checkpoint on the 0.3.75 engine (which lacks the reference method
`index_timestep_zero`): refused at start, never run degraded, and not retried. The real
supervisor and worker, the shipped 2511 workflow and mapping, and a 2511 random-weight
diffusion model from bench/qwen_weights.py (`--variant 2511`: its marker key); the other
model files are empty placeholders, never read (the refusal comes before any weight is)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.qwen_shrink import CI
from supervisor import preflight
from supervisor import config as config_module
from tests.support.comfyui import require_root
from tests.support.node import REPO, NodeProcess
from tests.support.qwen import production_comfyui

WORKFLOW_2511 = REPO / "conf" / "workflows" / "qwen_image_edit_2511_tryon.json"
DIFFUSION_2511 = "qwen_image_edit_2511_fp8mixed.safetensors"


@pytest.fixture(scope="module")
def models_2511(tmp_path_factory):
    models = tmp_path_factory.mktemp("models-2511")
    subprocess.run(
        [sys.executable, str(REPO / "bench" / "qwen_weights.py"), "--out", str(models), "--variant", "2511",
         "--only", "diffusion_model", "--shrink-json", __import__("json").dumps(CI.as_dict())],
        cwd=REPO, check=True, timeout=300, stdout=subprocess.DEVNULL,
    )
    assert (models / "diffusion_models" / DIFFUSION_2511).is_file()
    for folder, name in (("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors"), ("vae", "qwen_image_vae.safetensors"),
                         ("loras", "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors")):
        (models / folder).mkdir(exist_ok=True)
        (models / folder / name).touch()
    return models


def settings_2511(models) -> dict:
    settings = production_comfyui()
    settings.update(path=str(require_root()), models_dir=str(models), workflow=str(WORKFLOW_2511), warmup=False)
    return settings


def test_a_2511_checkpoint_on_0_3_75_is_refused_at_start_and_the_node_gives_up_at_once(tmp_path, receiver, models_2511):
    node = NodeProcess(tmp_path, receiver.url, {
        "worker": {"backend": "tests.support.comfyui:TestComfyUIBackend", "startup_timeout_s": 300,
                   "max_restarts": 10, "max_backoff_s": 1},
        "model": {"custom": settings_2511(models_2511)},
    }).start(wait=False)
    try:
        failure = node.wait_event("worker_startup_failed", timeout=240, process="supervisor")
        assert failure["reason"] == "Unrunnable", failure
        error = failure["error"]
        assert f"{DIFFUSION_2511} is a Qwen-Image-Edit-2511 checkpoint (key __index_timestep_zero__)" in error
        assert "ComfyUI 0.3.75" in error and "0.38.1 has it" in error  # the engine here, and one that has it
        assert "node '113' (FluxKontextMultiReferenceLatentMethod)" in error  # the workflow's own ask
        exited = node.wait_event("worker_exited", timeout=60)
        assert exited["returncode"] == 6 and "not retried" in exited["description"], exited
        failed = node.wait_event("worker_failed", timeout=30)
        assert "a restart would not mend it" in failed["why"]
        assert node.wait_exit(90) == 3, node.tail()  # as after a crash loop, without the loop
        assert len(node.events("worker_exited")) == 1 and not node.events("worker_restarting")
        assert not node.events("worker_ready")
    finally:
        if node.process.poll() is None:
            node.stop()


def test_check_config_finds_the_same_from_the_files_header(tmp_path, models_2511):
    raw = {"node_id": "n", "auth": {"tokens": ["t" * 24]}, "callback": {"url": "http://127.0.0.1:9/cb", "token": "c"},
           "worker": {"backend": "comfyui"}, "spool": {"dir": str(tmp_path / "spool")},
           "model": {"comfyui": settings_2511(models_2511)}}
    path = tmp_path / "config.yaml"
    path.write_text(__import__("yaml").safe_dump(raw))
    loaded = config_module.load(path, environ={})
    problems = [str(p) for p in preflight.comfyui_engine_fit(loaded)]
    assert any(DIFFUSION_2511 in p and "ComfyUI 0.3.75" in p and "index_timestep_zero" in p for p in problems), problems
    assert any("node '113'" in p for p in problems), problems
    assert preflight.warnings(loaded) == []  # 0.3.75 is the tested engine: no WARNING
