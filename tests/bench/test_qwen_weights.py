"""bench/qwen_weights.py: the random-weight files of the Qwen workflow (the run itself:
tests/integration/test_comfyui_qwen_run.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from bench import qwen_weights
from bench.qwen_shrink import CI, FULL
from bench.qwen_weights import Tensor, module_tensors, tensor_chunks, write_safetensors
from tests.support.comfyui import require_root
from tests.support.node import REPO


def test_the_files_are_the_ones_the_shipped_workflow_loads():
    assert qwen_weights.model_files() == {
        "diffusion_model": ("diffusion_models", "qwen_image_edit_2509_fp8_e4m3fn.safetensors"),
        "text_encoder": ("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors"),
        "vae": ("vae", "qwen_image_vae.safetensors"),
        "lora": ("loras", "Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors"),
    }


def test_a_written_file_reads_back_with_safetensors_and_repeats_for_a_seed(tmp_path):
    from safetensors.torch import load_file

    tensors = [
        Tensor("w", (64, 32), torch.float8_e4m3fn, "normal", 1 / 32**0.5),
        Tensor("b", (64,), torch.bfloat16, "zeros"),
        Tensor("norm", (32,), torch.bfloat16, "ones"),
        Tensor("scale", (), torch.float32, "const", 0.25),
        Tensor("marker", (0,), torch.float8_e4m3fn, "zeros"),
    ]
    size = write_safetensors(tmp_path / "a.safetensors", tensors, 3, torch, "cpu", {"seed": "3"})
    write_safetensors(tmp_path / "b.safetensors", tensors, 3, torch, "cpu", {"seed": "3"})
    assert (tmp_path / "a.safetensors").stat().st_size == size
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = load_file(tmp_path / "a.safetensors")
    assert {k: (tuple(v.shape), v.dtype) for k, v in loaded.items()} == {t.name: (t.shape, t.dtype) for t in tensors}
    assert loaded["w"].float().std().item() == pytest.approx(1 / 32**0.5, rel=0.2)
    assert loaded["b"].eq(0).all() and loaded["norm"].eq(1).all() and loaded["scale"].item() == 0.25
    other = write_safetensors(tmp_path / "c.safetensors", tensors, 4, torch, "cpu", {"seed": "4"})
    assert other == size and (tmp_path / "c.safetensors").read_bytes() != (tmp_path / "a.safetensors").read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_big_tensors_are_generated_in_bounded_chunks(monkeypatch):
    monkeypatch.setattr(qwen_weights, "CHUNK_ELEMENTS", 1000)
    chunks = list(tensor_chunks(Tensor("big", (50, 45), torch.bfloat16, "normal", 1.0), 0, torch, "cpu"))
    assert [c.numel() for c in chunks] == [1000, 1000, 250]
    assert all(c.dtype == torch.bfloat16 for c in chunks)


def test_initialisation_follows_the_module_that_owns_each_parameter():
    nn = torch.nn
    with torch.device("meta"):
        model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 4), nn.LayerNorm(4), nn.Conv2d(3, 5, 3))
    got = {t.name: (t.dtype, t.init, round(t.std, 4)) for t in module_tensors(model, torch, fp8_linear=True, scaled=False)}
    assert got == {
        "0.weight": (torch.bfloat16, "normal", 1.0),  # embeddings N(0, 1)
        "1.weight": (torch.float8_e4m3fn, "normal", round(1 / 8**0.5, 4)),  # N(0, 1/fan_in), fp8
        "1.bias": (torch.bfloat16, "zeros", 0.0),
        "2.weight": (torch.bfloat16, "ones", 0.0),  # a norm's scale
        "2.bias": (torch.bfloat16, "zeros", 0.0),
        "3.weight": (torch.bfloat16, "normal", round(1 / 27**0.5, 4)),  # fan_in 3 x 3 x 3
        "3.bias": (torch.bfloat16, "zeros", 0.0),
    }


def test_an_unknown_parameter_kind_is_refused_rather_than_guessed():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.empty(3, device="meta"))

    with pytest.raises(ValueError, match="table"):
        module_tensors(Odd(), torch, fp8_linear=False, scaled=False)


def test_full_size_matches_the_published_files_layout():
    """Derived from the engine's classes on meta (a child process: the engine's imports
    stay out of pytest's): the published sizes and the text encoder's scaled-fp8 layout."""
    plan = plan_of("full")
    gb = {role: round(file["bytes"] / 1e9, 2) for role, file in plan.items()}
    assert gb == {"diffusion_model": 20.44, "text_encoder": 8.29, "vae": 0.25, "lora": 0.85}
    diffusion, te, lora = plan["diffusion_model"], plan["text_encoder"], plan["lora"]
    assert max(int(n.split(".")[1]) for n in diffusion["names"] if n.startswith("transformer_blocks.")) == FULL.diffusion_blocks - 1
    assert diffusion["dtypes"] == {"float8_e4m3fn": 846, "bfloat16": 1087}  # every Linear weight fp8
    # Scaled fp8: the marker, and one float32 scale per fp8 Linear weight (358 in Qwen2.5-VL 7B).
    assert "scaled_fp8" in te["names"]
    scales = [n for n in te["names"] if n.endswith(".scale_weight")]
    assert len(scales) == te["dtypes"]["float32"] == 358
    assert all(n.removesuffix(".scale_weight") + ".weight" in te["names"] for n in scales)
    assert sum(n.startswith("model.layers.") and n.endswith("input_layernorm.weight") for n in te["names"]) == 28
    assert sum(n.startswith("visual.blocks.") and n.endswith("norm1.weight") for n in te["names"]) == 32
    # The LoRA: down, up and alpha on 12 Linears of each of the 60 blocks, rank 64.
    assert lora["tensors"] == 60 * 12 * 3
    assert "transformer_blocks.59.attn.to_q.lora_down.weight" in lora["names"]


def plan_of(size: str) -> dict:
    require_root()
    result = subprocess.run([sys.executable, "bench/qwen_weights.py", "--plan", "--size", size],
                            cwd=REPO, capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_ci_files_hold_the_shrunk_depths_and_everything_else_at_full_size():
    plan = plan_of("ci")
    blocks = {n.split(".")[1] for n in plan["diffusion_model"]["names"] if n.startswith("transformer_blocks.")}
    assert blocks == {"0"}
    te = plan["text_encoder"]["names"]
    assert {n.split(".")[2] for n in te if n.startswith("model.layers.")} == {"0"}
    assert {n.split(".")[2] for n in te if n.startswith("visual.blocks.")} == {"0", "1"}
    assert "model.embed_tokens.weight" in te  # the whole vocabulary
    assert plan["vae"]["bytes"] == 253785062  # as at full size
    assert qwen_weights.cache_key(CI, 0) != qwen_weights.cache_key(CI, 1) != qwen_weights.cache_key(FULL, 0)


def test_the_2511_variant_names_the_2511_workflows_files_and_marks_its_diffusion_model():
    assert qwen_weights.model_files(qwen_weights.VARIANTS["2511"]) == {
        "diffusion_model": ("diffusion_models", "qwen_image_edit_2511_fp8mixed.safetensors"),
        "text_encoder": ("text_encoders", "qwen_2.5_vl_7b_fp8_scaled.safetensors"),
        "vae": ("vae", "qwen_image_vae.safetensors"),
        "lora": ("loras", "Qwen-Image-Edit-2511-Lightning-4steps-V1.0-bf16.safetensors"),
    }
    assert qwen_weights.MARKERS["2511"] == ("__index_timestep_zero__",) and "2509" not in qwen_weights.MARKERS
