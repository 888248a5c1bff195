"""check-config's checks beyond the schema: the spool folder and the ComfyUI files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from supervisor import config, preflight
from tests.support.comfyui import require_root
from tests.support.node import REPO

BASE = {"node_id": "n", "auth": {"tokens": ["0123456789abcdef"]}, "callback": {"url": "http://127.0.0.1:9/c", "token": "t"}}
WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
    "2": {"class_type": "LoadImage", "inputs": {"image": "garment.png"}},
    "4": {"class_type": "VAELoader", "inputs": {"vae_name": "vae.safetensors"}},
    "8": {"class_type": "ImageBlend", "inputs": {"image1": ["1", 0], "image2": ["2", 0], "vae": ["4", 0]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}},
}
COMFYUI = {
    "path": "ComfyUI", "workflow": "flow.json",
    "inputs": {"person_image": {"node": "1", "input": "image"}, "garment_image": {"node": "2", "input": "image"}},
    "output": {"node": "9", "input": "images"},
}


def loaded_from(tmp_path, **sections) -> config.LoadedConfig:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, **sections}))
    return config.load(path, {})


def paths(problems) -> list[str]:
    return [p.path for p in problems]


def test_a_writable_spool_folder_or_one_that_can_be_made_passes(tmp_path):
    assert preflight.run(loaded_from(tmp_path)) == []  # spool/ beside the file, made at start
    (tmp_path / "spool").mkdir()
    assert preflight.run(loaded_from(tmp_path)) == []
    assert list((tmp_path / "spool").iterdir()) == []  # the probe left nothing


def test_a_spool_that_is_a_file_or_under_a_file_is_a_problem(tmp_path):
    (tmp_path / "blocker").write_text("")
    (problem,) = preflight.run(loaded_from(tmp_path, spool={"dir": "blocker"}))
    assert problem.path == "spool.dir" and "is not a folder" in problem.message
    assert problem.line is not None
    (problem,) = preflight.run(loaded_from(tmp_path, spool={"dir": "blocker/spool"}))
    assert "does not exist" in problem.message


@pytest.fixture
def comfy(tmp_path):
    root = tmp_path / "ComfyUI"
    (root / "models" / "vae").mkdir(parents=True)
    (root / "execution.py").touch()
    (root / "nodes.py").touch()
    (root / "models" / "vae" / "vae.safetensors").touch()
    (tmp_path / "flow.json").write_text(json.dumps(WORKFLOW))
    return tmp_path


def with_comfyui(tmp_path, **changes) -> config.LoadedConfig:
    return loaded_from(tmp_path, worker={"backend": "comfyui"}, model={"comfyui": {**COMFYUI, **changes}})


def test_a_complete_comfyui_setup_passes(comfy):
    assert preflight.run(with_comfyui(comfy)) == []


def test_every_comfyui_problem_at_once(comfy):
    (comfy / "ComfyUI" / "models" / "vae" / "vae.safetensors").unlink()
    problems = preflight.run(with_comfyui(
        comfy,
        inputs={"person_image": {"node": "1", "input": "picture"}, "garment_image": {"node": "7", "input": "image"}},
        extra_model_paths="absent.yaml",
    ))
    assert sorted(paths(problems)) == [
        "model.comfyui.extra_model_paths",
        "model.comfyui.inputs.garment_image",
        "model.comfyui.inputs.person_image",
        "model.comfyui.models_dir",
    ]
    (models,) = [p for p in problems if p.path.endswith("models_dir")]
    assert "'vae.safetensors' (node '4' VAELoader, input 'vae_name')" in models.message
    assert all(p.line is not None for p in problems)


def test_the_workflows_own_steps_must_lie_within_the_step_limits(comfy):
    workflow = {**WORKFLOW, "3": {"class_type": "KSampler", "inputs": {"steps": 20, "seed": 0}}}
    (comfy / "flow.json").write_text(json.dumps(workflow))
    mapped = {**COMFYUI["inputs"], "steps": {"node": "3", "input": "steps"}}
    loaded = loaded_from(comfy, worker={"backend": "comfyui"}, limits={"steps": [4, 4]},
                         model={"comfyui": {**COMFYUI, "inputs": mapped}})
    (problem,) = preflight.run(loaded)
    assert problem.path == "limits.steps" and problem.line is not None
    assert problem.message == ("[4, 4] leaves out the workflow's own steps (20, node '3' input 'steps'), "
                               "which a job naming no steps runs")
    workflow["3"]["inputs"]["steps"] = 4
    (comfy / "flow.json").write_text(json.dumps(workflow))
    assert preflight.run(loaded) == []


def test_a_missing_root_and_workflow_are_named(comfy):
    problems = preflight.run(with_comfyui(comfy, path="elsewhere", workflow="absent.json"))
    assert paths(problems) == ["model.comfyui.path", "model.comfyui.workflow"]


def test_settings_keys_are_checked_every_one(comfy):
    problems = preflight.run(with_comfyui(comfy, warmup="often", outptu={}))
    assert [(p.path, p.message[:26]) for p in problems] == [
        ("model.comfyui.outptu", "unknown key; did you mean "),
        ("model.comfyui.warmup", "Expected `bool`, got `str`"),
    ]


def test_check_config_never_imports_torch_or_the_engine(comfy):
    path = with_comfyui(comfy).path
    code = (
        "import sys; from supervisor import cli; rc = cli.main(['check-config', '--config', sys.argv[1]]);"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'nodes', 'execution')))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr


@pytest.fixture
def engine(comfy):
    """The setup of `comfy` on the vendored engine, whose comfy/cli_args.py judges the options."""
    root = require_root()
    models = comfy / "ComfyUI" / "models"
    return lambda **changes: with_comfyui(comfy, path=str(root), models_dir=str(models), **changes)


def test_engine_options_are_judged_by_the_engines_own_parser(engine):
    good = {"gpu_only": True, "fast": ["fp8_matrix_mult"], "reserve_vram": 1.5, "use_pytorch_cross_attention": True}
    assert preflight.run(engine(options=good)) == []
    problems = preflight.run(engine(options={
        "hivram": True, "cpu": True, "reserve_vram": "lots", "use_sage_attention": True, "highvram": True,
    }))
    by_path = {p.path: p for p in problems}
    assert sorted(by_path) == [f"model.comfyui.options.{name}" for name in ("cpu", "hivram", "reserve_vram",
                                                                          "use_sage_attention")]
    assert by_path["model.comfyui.options.hivram"].message.startswith(
        "not an option of this engine; did you mean 'highvram'? valid: async_offload, bf16_text_enc")
    assert "the device is worker.device" in by_path["model.comfyui.options.cpu"].message
    assert by_path["model.comfyui.options.reserve_vram"].message == "--reserve-vram: invalid float value: 'lots'"
    assert by_path["model.comfyui.options.use_sage_attention"].message == (
        "needs the package 'sageattention', which is not installed")
    assert all(p.line is not None for p in problems)  # each at its own line in the file


def test_options_are_left_to_the_worker_where_the_engine_is_not_here(comfy):
    # The fixture's root has execution.py and nodes.py but no engine code to ask.
    assert preflight.run(with_comfyui(comfy, options={"hivram": True})) == []


def test_judging_the_options_imports_neither_torch_nor_the_engine(engine):
    path = engine(options={"highvram": True, "hivram": True}).path
    code = (
        "import sys; from supervisor import cli; rc = cli.main(['check-config', '--config', sys.argv[1]]);"
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'comfy', 'nodes', 'execution')))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.splitlines()[-1] == "2 []", result.stdout + result.stderr
    assert "model.comfyui.options.hivram" in result.stdout + result.stderr


def test_an_engine_outside_the_tested_table_is_a_warning_not_a_problem(comfy):
    root = comfy / "ComfyUI"
    (root / "comfyui_version.py").write_text('__version__ = "0.38.1"\n')
    loaded = with_comfyui(comfy)
    (warning,) = preflight.warnings(loaded)
    assert warning.startswith("model.comfyui.path: ComfyUI 0.38.1 is not a version this node is tested with (0.3.75)")
    assert preflight.run(loaded) == []  # the start goes on, with the same line at WARNING
    result = subprocess.run([sys.executable, "-m", "supervisor.cli", "check-config", "--config", str(loaded.path)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "gpu-server: WARNING: model.comfyui.path: ComfyUI 0.38.1 is not a version" in result.stderr
    (root / "comfyui_version.py").write_text('__version__ = "0.3.75"\n')
    assert preflight.warnings(with_comfyui(comfy)) == []


def test_a_2511_checkpoint_is_a_problem_for_an_engine_without_its_reference_method(comfy):
    import struct

    root = comfy / "ComfyUI"
    (root / "comfyui_version.py").write_text('__version__ = "0.3.75"\n')
    (root / "comfy_extras").mkdir()
    (root / "comfy_extras" / "nodes_flux.py").write_text(
        "class FluxKontextMultiReferenceLatentMethod:\n    OPTIONS = ['offset', 'index', 'uxo/uno']\n")
    workflow = {**WORKFLOW, "37": {"class_type": "UNETLoader", "inputs": {"unet_name": "edit_2511.safetensors"}}}
    (comfy / "flow.json").write_text(json.dumps(workflow))
    (root / "models" / "diffusion_models").mkdir()
    blob = json.dumps({"__index_timestep_zero__": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]}}).encode()
    (root / "models" / "diffusion_models" / "edit_2511.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    (problem,) = [p for p in preflight.run(with_comfyui(comfy)) if "2511" in p.message]
    assert problem.path == "model.comfyui.models_dir"
    assert "edit_2511.safetensors is a Qwen-Image-Edit-2511 checkpoint" in problem.message and "0.3.75" in problem.message
