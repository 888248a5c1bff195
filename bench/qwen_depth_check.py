"""Do the random weights keep activations finite at full depth? Measured on the CPU.

    python bench/qwen_depth_check.py [--seed 0] [--only diffusion|text|vision]

Runs the engine's own models at their published depth (60 diffusion blocks, 28 language
layers, 32 vision blocks) with the exact values bench/qwen_weights.py writes for FULL,
without ever holding more than one block: each model is built with one block, and its
block list is replaced by one that loads block i's values into that block before the
engine's forward uses it (float32 compute, fp8 values and their scales applied as the
engine applies them). Small inputs (a 32x32 latent, ~150 tokens, a 56x56 image): the
growth of the residual stream depends on the depth, not on the number of tokens.

Prints the RMS of the residual stream after every block and the output's; exit status 1
if anything is not finite. Takes a few minutes on 2 cores; nothing on disk.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import qwen_weights  # noqa: E402
from bench.qwen_shrink import FULL, Shrink, shrink_text_encoder  # noqa: E402
from bench.qwen_weights import Tensor  # noqa: E402

ONE = Shrink(diffusion_blocks=1, text_layers=1, vision_blocks=1)


def values(tensor: Tensor, seed: int, torch):
    """The tensor as written, in float32 (a scaled fp8 weight still without its scale)."""
    flat = torch.cat([chunk.float() for chunk in qwen_weights.tensor_chunks(tensor, seed, torch, "cpu")]) \
        if math.prod(tensor.shape) else torch.empty(0)
    return flat.reshape(tensor.shape)


def state(tensors: list[Tensor], prefix: str, seed: int, torch) -> dict:
    """{name without prefix: float32 values} for the tensors under `prefix`, scales applied."""
    selected = {t.name: t for t in tensors if t.name.startswith(prefix)}
    out = {}
    for name, tensor in selected.items():
        if tensor.init == "fp8_scaled":
            scale = selected[name.removesuffix(".weight") + ".scale_weight"]
            out[name[len(prefix):]] = values(tensor, seed, torch) * scale.std
        elif not name.endswith((".scale_weight", "scaled_fp8")):
            out[name[len(prefix):]] = values(tensor, seed, torch)
    return out


def streaming_blocks(torch, block, count: int, load, rms: list, stream_of):
    """A stand-in for a model's block list: `count` blocks, one module, reloaded each time."""

    class Recorded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = block

        def forward(self, *args, **kwargs):
            out = self.block(*args, **kwargs)
            rms.append(stream_of(out).float().pow(2).mean().sqrt().item())
            return out

    class Blocks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.recorded = Recorded()

        def __len__(self) -> int:
            return count

        def __iter__(self):
            for i in range(count):
                load(i)
                yield self.recorded

    return Blocks()


def report(name: str, rms: list[float], output, started: float) -> bool:
    finite = all(math.isfinite(r) for r in rms) and bool(output.isfinite().all())
    marks = ", ".join(f"{i + 1}: {r:.3g}" for i, r in enumerate(rms) if i in (0, 1, 3, 7, 15, 27, 31, 59) or i == len(rms) - 1)
    print(f"{name}: {len(rms)} blocks, residual RMS after block {marks}; output RMS "
          f"{output.float().pow(2).mean().sqrt().item():.3g}, finite: {finite} ({time.perf_counter() - started:.0f} s)",
          flush=True)
    return finite


def check_diffusion(torch, seed: int) -> bool:
    started = time.perf_counter()
    import comfy.ops

    full = qwen_weights.diffusion_tensors(torch, qwen_weights.diffusion_model(torch, FULL))
    model = qwen_weights.diffusion_model(torch, ONE).diffusion_model
    model = type(model)(num_layers=1, image_model="qwen_image", dtype=torch.float32, device="cpu",
                        operations=comfy.ops.disable_weight_init)
    outer = [t for t in full if not t.name.startswith("transformer_blocks.")]
    model.load_state_dict(state(outer, "", seed, torch), strict=False)  # all but the blocks
    block = model.transformer_blocks[0]
    rms: list[float] = []
    model.transformer_blocks = streaming_blocks(
        torch, block, FULL.diffusion_blocks,
        lambda i: block.load_state_dict(state(full, f"transformer_blocks.{i}.", seed, torch)), rms,
        lambda out: out[1])  # (text stream, image stream)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 1, 32, 32, generator=g)
    context = torch.randn(1, 150, 3584, generator=g)
    with torch.inference_mode():
        out = model(x, torch.tensor([0.5]), context, ref_latents=[torch.randn(1, 16, 1, 32, 32, generator=g)])
    return report("diffusion model", rms, out, started)


def check_text(torch, seed: int) -> bool:
    started = time.perf_counter()
    import comfy.ops
    import comfy.text_encoders.llama as llama

    shrink_text_encoder(FULL)
    full = qwen_weights.text_encoder_tensors(torch, FULL)
    shrink_text_encoder(ONE)
    model = llama.Qwen25_7BVLI({}, torch.float32, "cpu", comfy.ops.disable_weight_init)
    embedding = values(next(t for t in full if t.name == "model.embed_tokens.weight"), seed, torch)
    tokens = torch.randint(0, embedding.shape[0], (1, 150), generator=torch.Generator().manual_seed(seed))
    embeds = embedding[tokens]
    del embedding
    model.model.norm.load_state_dict(state(full, "model.norm.", seed, torch))
    layer = model.model.layers[0]
    rms: list[float] = []
    model.model.layers = streaming_blocks(
        torch, layer, FULL.text_layers,
        lambda i: layer.load_state_dict(state(full, f"model.layers.{i}.", seed, torch)), rms, lambda out: out)
    with torch.inference_mode():
        out, _ = model(None, embeds=embeds, dtype=torch.float32)
    return report("text encoder (language model)", rms, out, started)


def check_vision(torch, seed: int) -> bool:
    started = time.perf_counter()
    import comfy.ops
    from comfy.text_encoders import qwen_vl

    shrink_text_encoder(FULL)
    full = qwen_weights.text_encoder_tensors(torch, FULL)
    shrink_text_encoder(ONE)
    visual = qwen_vl.Qwen2VLVisionTransformer(hidden_size=1280, output_hidden_size=3584, device="cpu",
                                              dtype=torch.float32, ops=comfy.ops.disable_weight_init)
    visual.fullatt_block_indexes = [7, 15, 23, 31]  # the published tower's, at full depth
    for part in ("patch_embed.", "merger."):
        getattr(visual, part[:-1]).load_state_dict(state(full, f"visual.{part}", seed, torch))
    block = visual.blocks[0]
    rms: list[float] = []
    visual.blocks = streaming_blocks(
        torch, block, FULL.vision_blocks,
        lambda i: block.load_state_dict(state(full, f"visual.blocks.{i}.", seed, torch)), rms, lambda out: out)
    image = torch.rand(1, 112, 112, 3, generator=torch.Generator().manual_seed(seed))
    pixels, grid = qwen_vl.process_qwen2vl_images(image)
    with torch.inference_mode():
        out = visual(pixels, grid)
    return report("vision tower", rms, out, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=("diffusion", "text", "vision"))
    parser.add_argument("--comfyui-path", type=Path)
    args = parser.parse_args(argv)
    torch = qwen_weights.import_engine(args.comfyui_path or qwen_weights.vendored_root())
    checks = {"vision": check_vision, "text": check_text, "diffusion": check_diffusion}
    results = [check(torch, args.seed) for name, check in checks.items() if args.only in (None, name)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
