"""At load, before any weight is read: refuse a diffusion model this engine cannot run right.

Each diffusion model file the workflow loads is looked up where the engine would find it and
its safetensors header read (`comfyui_config.checkpoint`: the header only, no weights). What
the engine can do is asked of the engine itself: the reference methods of its live
`FluxKontextMultiReferenceLatentMethod` node (its input's choices), and whether its model code
reads `.comfy_quant` (from its files). A refusal raises `Unrunnable`: the worker exits with
its own status, which the supervisor does not retry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from comfyui_config import checkpoint as checkpoints, engine as engines
from gpu_worker.engine import Unrunnable

METHOD_NODE = "FluxKontextMultiReferenceLatentMethod"


def live_reference_methods(node_types: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The choices of the engine's reference method node, as its own INPUT_TYPES gives them
    (both the old node API and the newer one answer INPUT_TYPES); None when not there."""
    node = node_types.get(METHOD_NODE)
    if node is None:
        return None
    try:
        spec = node.INPUT_TYPES()["required"]["reference_latents_method"]
    except Exception:  # another node shape: read its source instead
        return None
    choices = spec[0] if isinstance(spec, (list, tuple)) and spec else None
    if isinstance(choices, (list, tuple)) and all(isinstance(c, str) for c in choices):
        return tuple(choices)
    if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict):
        options = spec[1].get("options")
        if isinstance(options, (list, tuple)):
            return tuple(str(o) for o in options)
    return None


def abilities(root: Path, version: str | None, node_types: Mapping[str, Any]) -> checkpoints.Abilities:
    methods = live_reference_methods(node_types)
    if methods is None:
        methods = engines.reference_methods_in_source(root)
    return checkpoints.Abilities(version, methods, engines.reads_comfy_quant(root))


def check(workflow: dict, engine: checkpoints.Abilities, find: Callable[[str, str], str | None]) -> list[str]:
    """Every reason the workflow's models cannot run right on this engine. `find(folder,
    name)`: the file's path as the engine resolves it (None: not found; the workflow check
    that follows names a missing file)."""
    problems = checkpoints.method_refusals(workflow, engine)
    for _node_id, folder, name in checkpoints.diffusion_files(workflow):
        path = find(folder, name)
        if path is None:
            continue
        try:
            header = checkpoints.read_header(Path(path))
        except checkpoints.CheckpointError:
            continue  # no refusal for good: the engine's loader names a broken file (one still copying, say)
        problems += checkpoints.refusals(name, header, engine)
    return problems


def refuse_unrunnable(workflow: dict, engine: checkpoints.Abilities, find: Callable[[str, str], str | None]) -> None:
    problems = check(workflow, engine, find)
    if problems:
        raise Unrunnable("; ".join(problems))
