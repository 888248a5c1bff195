"""What a diffusion model file needs of the engine, read from its safetensors header alone.

A safetensors file starts with 8 bytes (little-endian header length) and a JSON header naming
every tensor; nothing else is read, so this is cheap on a 20 GB file and needs no torch.
Two markers matter for Qwen-Image-Edit:
- the key `__index_timestep_zero__` (Comfy-Org's Qwen-Image-Edit-2511 files): the model
  wants its reference-image tokens at timestep zero, the reference method
  `index_timestep_zero` (upstream PR #11340, 2025-12-16). An engine without it loads the
  file, ignores the key and runs with degraded edits;
- per-layer `<layer>.comfy_quant` tensors (Comfy-Org's `..._fp8mixed` files): quantisation
  an engine that does not read them loads as plain tensors, wrongly scaled.
`refusals` says, for an engine's abilities, why such a file cannot run right there: the
worker refuses to start (an exit that is not retried) and check-config says the same.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterable, NamedTuple

INDEX_TIMESTEP_ZERO_KEY = "__index_timestep_zero__"
COMFY_QUANT_SUFFIX = ".comfy_quant"
MAX_HEADER_BYTES = 100 * 2**20  # the format's own limit
# Loaders whose file is a diffusion model (the one these markers are in).
DIFFUSION_LOADERS = {"UNETLoader": ("unet_name", "diffusion_models")}
# Where each need is met, for the message.
NEEDS = {
    "index_timestep_zero": "a ComfyUI whose FluxKontextMultiReferenceLatentMethod offers 'index_timestep_zero' "
                           "(upstream since PR #11340, 2025-12-16; 0.38.1 has it)",
    "comfy_quant": "a ComfyUI that reads per-layer .comfy_quant quantisation metadata (0.38.1 does)",
}


class CheckpointError(Exception):
    pass


class Abilities(NamedTuple):
    version: str | None
    reference_methods: tuple[str, ...] | None  # None: not known
    reads_comfy_quant: bool


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names -> dtype, shape, offsets)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(f"{path}: not a safetensors file (shorter than its header length)")
            (length,) = struct.unpack("<Q", prefix)
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: not a safetensors file (header of {length} bytes)")
            blob = f.read(length)
            if len(blob) < length:
                raise CheckpointError(f"{path}: not a safetensors file (its header is cut short)")
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(blob)
    except ValueError:
        raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not an object)")
    return header


def needs(header: dict[str, Any]) -> list[str]:
    """What the file needs of the engine beyond a plain load (keys of NEEDS)."""
    found = []
    if INDEX_TIMESTEP_ZERO_KEY in header:
        found.append("index_timestep_zero")
    if any(name.endswith(COMFY_QUANT_SUFFIX) for name in header):
        found.append("comfy_quant")
    return found


def refusals(name: str, header: dict[str, Any], engine: Abilities) -> list[str]:
    """Why this engine cannot run the file right, one line per reason (none: it can)."""
    here = f"this engine is ComfyUI {engine.version or '(no version declared)'}"
    problems = []
    for need in needs(header):
        if need == "index_timestep_zero":
            methods = engine.reference_methods or ()
            if "index_timestep_zero" in methods:
                continue
            problems.append(
                f"{name} is a Qwen-Image-Edit-2511 checkpoint (key {INDEX_TIMESTEP_ZERO_KEY}): it needs {NEEDS[need]}; "
                f"{here}, whose reference methods are {', '.join(methods) or 'unknown'}: it would run with degraded edits"
            )
        elif need == "comfy_quant" and not engine.reads_comfy_quant:
            problems.append(
                f"{name} carries per-layer .comfy_quant quantisation metadata: it needs {NEEDS[need]}; {here}, which "
                f"reads only a _quantization_metadata header: it would load the layers wrongly scaled"
            )
    return problems


def method_refusals(workflow: dict, engine: Abilities) -> list[str]:
    """A FluxKontextMultiReferenceLatentMethod node of the workflow asking for a method the
    engine lacks (index_timestep_zero on 0.3.75, say): the same refusal as the checkpoint's."""
    problems = []
    if engine.reference_methods is None:
        return problems
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or node.get("class_type") != "FluxKontextMultiReferenceLatentMethod":
            continue
        method = node.get("inputs", {}).get("reference_latents_method")
        if isinstance(method, str) and method not in engine.reference_methods and not (
                "uxo" in method and "uxo/uno" in engine.reference_methods):
            need = NEEDS.get(method, f"a ComfyUI whose FluxKontextMultiReferenceLatentMethod offers {method!r}")
            problems.append(
                f"node {node_id!r} (FluxKontextMultiReferenceLatentMethod) asks for the reference method {method!r}: "
                f"it needs {need}; this engine is ComfyUI {engine.version or '(no version declared)'}, whose reference "
                f"methods are {', '.join(engine.reference_methods)}"
            )
    return problems


def diffusion_files(workflow: dict) -> Iterable[tuple[str, str, str]]:
    """(node id, model folder, file name) of each diffusion model loader of the workflow."""
    for node_id, node in workflow.items():
        if not isinstance(node, dict):
            continue
        loader = DIFFUSION_LOADERS.get(node.get("class_type", ""))
        value = node.get("inputs", {}).get(loader[0]) if loader else None
        if loader and isinstance(value, str):
            yield str(node_id), loader[1], value
