"""comfyui_config/checkpoint.py: a diffusion model's needs from its safetensors header, and
why an engine cannot run it right."""

from __future__ import annotations

import json
import struct

import pytest

from comfyui_config import checkpoint

OLD = checkpoint.Abilities("0.3.75", ("offset", "index", "uxo/uno"), reads_comfy_quant=False)
NEW = checkpoint.Abilities("0.38.1", ("offset", "index", "uxo/uno", "index_timestep_zero"), reads_comfy_quant=True)


def safetensors(path, names, extra: bytes = b"\0" * 16):
    header = {"__metadata__": {"format": "pt"}}
    header.update({n: {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]} for n in names})
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + extra)
    return path


def test_a_2511_checkpoint_is_refused_on_an_engine_without_index_timestep_zero(tmp_path):
    path = safetensors(tmp_path / "m.safetensors", ["transformer_blocks.0.attn.to_q.weight", "__index_timestep_zero__"])
    header = checkpoint.read_header(path)
    assert checkpoint.needs(header) == ["index_timestep_zero"]
    (refusal,) = checkpoint.refusals("qwen_image_edit_2511_bf16.safetensors", header, OLD)
    assert "Qwen-Image-Edit-2511" in refusal and "index_timestep_zero" in refusal
    assert "ComfyUI 0.3.75" in refusal and "0.38.1 has it" in refusal  # the version here, and one that has it
    assert checkpoint.refusals("m", header, NEW) == []


def test_per_layer_comfy_quant_metadata_is_refused_where_the_engine_does_not_read_it(tmp_path):
    path = safetensors(tmp_path / "m.safetensors", ["b.0.weight", "b.0.weight_scale", "b.0.comfy_quant",
                                                  "__index_timestep_zero__"])
    header = checkpoint.read_header(path)
    assert checkpoint.needs(header) == ["index_timestep_zero", "comfy_quant"]
    refusals = checkpoint.refusals("qwen_image_edit_2511_fp8mixed.safetensors", header, OLD)
    assert len(refusals) == 2 and ".comfy_quant" in refusals[1]
    assert checkpoint.refusals("m", header, NEW) == []


def test_a_2509_checkpoint_needs_nothing(tmp_path):
    header = checkpoint.read_header(safetensors(tmp_path / "m.safetensors", ["transformer_blocks.0.img_mlp.weight"]))
    assert checkpoint.needs(header) == [] and checkpoint.refusals("m", header, OLD) == []


@pytest.mark.parametrize("content", [b"", b"\x05\0\0\0\0\0\0\0{}", struct.pack("<Q", 2**40) + b"{}",
                                     struct.pack("<Q", 3) + b"[1]", struct.pack("<Q", 4) + b"nope"])
def test_a_file_that_is_no_safetensors_is_named(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match="bad.safetensors"):
        checkpoint.read_header(path)


def test_a_reference_method_node_asking_for_what_the_engine_lacks_is_refused():
    workflow = {"5": {"class_type": "FluxKontextMultiReferenceLatentMethod",
                      "inputs": {"conditioning": ["4", 0], "reference_latents_method": "index_timestep_zero"}},
                "6": {"class_type": "FluxKontextMultiReferenceLatentMethod",
                      "inputs": {"conditioning": ["4", 0], "reference_latents_method": "uxo"}}}
    (refusal,) = checkpoint.method_refusals(workflow, OLD)  # "uxo" is the engine's "uxo/uno"
    assert "node '5'" in refusal and "index_timestep_zero" in refusal and "0.3.75" in refusal
    assert checkpoint.method_refusals(workflow, NEW) == []


def test_the_diffusion_model_files_of_a_workflow():
    workflow = {"37": {"class_type": "UNETLoader", "inputs": {"unet_name": "a.safetensors"}},
                "38": {"class_type": "CLIPLoader", "inputs": {"clip_name": "b.safetensors"}}}
    assert list(checkpoint.diffusion_files(workflow)) == [("37", "diffusion_models", "a.safetensors")]
