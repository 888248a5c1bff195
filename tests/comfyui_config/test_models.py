"""Model files named by a workflow, looked for in the model folders without the engine."""

from __future__ import annotations

from comfyui_config import models

WORKFLOW = {
    "37": {"class_type": "UNETLoader", "inputs": {"unet_name": "unet.safetensors", "weight_dtype": "default"}},
    "39": {"class_type": "VAELoader", "inputs": {"vae_name": "sub/vae.SFT"}},
    "78": {"class_type": "LoadImage", "inputs": {"image": "person.png"}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 0, "model": ["37", 0]}},
}


def test_model_inputs_are_the_inputs_naming_model_files():
    assert models.model_inputs(WORKFLOW) == [
        models.ModelInput("37", "UNETLoader", "unet_name", "unet.safetensors"),
        models.ModelInput("39", "VAELoader", "vae_name", "sub/vae.SFT"),
    ]


def test_a_file_is_found_in_any_folder_under_models_dir_or_an_extra_path(tmp_path):
    (tmp_path / "models" / "diffusion_models").mkdir(parents=True)
    (tmp_path / "models" / "diffusion_models" / "unet.safetensors").touch()
    inputs = models.model_inputs(WORKFLOW)
    folders = models.model_folders(str(tmp_path / "models"), None)
    assert [m.file for m in models.missing(inputs, folders)] == ["sub/vae.SFT"]

    # ComfyUI's extra_model_paths.yaml: base_path (relative: to the file), several
    # folders one per line.
    (tmp_path / "shared" / "vae-b" / "sub").mkdir(parents=True)
    (tmp_path / "shared" / "vae-b" / "sub" / "vae.SFT").touch()
    extra = tmp_path / "extra_model_paths.yaml"
    extra.write_text("mine:\n  base_path: shared\n  is_default: true\n  vae: |\n    vae-a\n    vae-b\n")
    folders = models.model_folders(str(tmp_path / "models"), str(extra))
    assert tmp_path / "shared" / "vae-a" in folders
    assert models.missing(inputs, folders) == []
