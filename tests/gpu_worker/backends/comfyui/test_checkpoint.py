"""gpu_worker/backends/comfyui/checkpoint.py: the live engine's reference methods (either node
API's shape) and the refusal at load. (The real 0.3.75 engine refusing a 2511 random-weight
file: tests/integration/test_comfyui_engine_refusal.py.)"""

from __future__ import annotations

import json
import struct

import pytest

from comfyui_config.checkpoint import Abilities
from gpu_worker.backends.comfyui import checkpoint
from gpu_worker.engine import Unrunnable


class OldApiNode:  # the classic node API: a list of choices
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"conditioning": ("CONDITIONING",), "reference_latents_method": (["offset", "index"],)}}


class NewApiNode:  # the newer node API's combo: its options in the input's dict
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"reference_latents_method": ("COMBO", {"options": ["offset", "index_timestep_zero"]})}}


def test_the_reference_methods_from_either_node_api():
    assert checkpoint.live_reference_methods({checkpoint.METHOD_NODE: OldApiNode}) == ("offset", "index")
    assert checkpoint.live_reference_methods({checkpoint.METHOD_NODE: NewApiNode}) == ("offset", "index_timestep_zero")
    assert checkpoint.live_reference_methods({}) is None


def test_a_2511_file_on_an_engine_without_the_method_is_refused_as_unrunnable(tmp_path):
    blob = json.dumps({"__index_timestep_zero__": {"dtype": "BF16", "shape": [0], "data_offsets": [0, 0]}}).encode()
    (tmp_path / "m.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob)
    workflow = {"37": {"class_type": "UNETLoader", "inputs": {"unet_name": "m.safetensors"}}}
    find = {("diffusion_models", "m.safetensors"): str(tmp_path / "m.safetensors")}.get
    old = Abilities("0.3.75", ("offset", "index", "uxo/uno"), False)
    with pytest.raises(Unrunnable, match="Qwen-Image-Edit-2511.*ComfyUI 0.3.75"):
        checkpoint.refuse_unrunnable(workflow, old, lambda folder, name: find((folder, name)))
    checkpoint.refuse_unrunnable(workflow, old._replace(reference_methods=("index_timestep_zero",)),
                                 lambda folder, name: find((folder, name)))
    # A file the engine does not find is left to the workflow check (which names it).
    assert checkpoint.check(workflow, old, lambda folder, name: None) == []
