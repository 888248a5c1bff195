"""The model files a workflow names, and whether they lie in the model folders.

Pure file work, no ComfyUI import, so `gpu-server check-config` can run it in the
supervisor's process. It is a first look: a file is found when it lies in any folder
under `models_dir` or listed by `extra_model_paths`; the worker's start then asks the
engine, which looks in the one folder of each loader (`vae/` for VAELoader, ...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple

import yaml

# What a model file is called; a loader input whose value ends so names one.
MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# Keys of an extra_model_paths.yaml section that are not folder names.
_NOT_FOLDERS = ("base_path", "is_default", "download_model_base")


class ModelInput(NamedTuple):
    node_id: str
    class_type: str
    input: str
    file: str  # as the workflow names it: `x.safetensors` or `sub/x.safetensors`


def model_inputs(workflow: Mapping[str, dict]) -> list[ModelInput]:
    """Every node input of the workflow whose value is a model file name."""
    found = []
    for node_id, node in workflow.items():
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, str) and value.lower().endswith(MODEL_FILE_SUFFIXES):
                found.append(ModelInput(str(node_id), node.get("class_type", "?"), name, value))
    return found


def model_folders(models_dir: str, extra_model_paths: str | None) -> list[Path]:
    """The folders ComfyUI looks in: each folder under `models_dir`, and every folder an
    extra_model_paths.yaml lists (ComfyUI's format: sections of `base_path` plus
    `folder_name: path`, several paths one per line)."""
    folders = sorted(p for p in Path(models_dir).glob("*") if p.is_dir())
    if extra_model_paths is None:
        return folders
    try:
        data = yaml.safe_load(Path(extra_model_paths).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return folders  # the worker's start reports an unreadable file in full
    yaml_dir = Path(extra_model_paths).parent
    for section in data.values() if isinstance(data, dict) else ():
        if not isinstance(section, dict):
            continue
        base = Path(os.path.expanduser(str(section.get("base_path", ""))))
        base = base if base.is_absolute() else yaml_dir / base
        for key, value in section.items():
            if key in _NOT_FOLDERS or not isinstance(value, str):
                continue
            for line in value.splitlines():
                if line.strip():
                    folder = Path(os.path.expanduser(line.strip()))
                    folders.append(folder if folder.is_absolute() else base / folder)
    return folders


def missing(inputs: list[ModelInput], folders: list[Path]) -> list[ModelInput]:
    return [m for m in inputs if not any((folder / m.file).is_file() for folder in folders)]

