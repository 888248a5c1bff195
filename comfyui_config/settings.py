"""The ComfyUI backend's settings (`model.comfyui` in the config), typed and checked.

The supervisor hands this section over as a free mapping: only the backend knows what it
needs, so it validates the section itself, and every problem names its key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Union

import msgspec

DEFAULT_KEY = "model.comfyui"


class Target(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One input of one workflow node: `{node: "3", input: "seed"}`."""

    node: Union[str, int]  # YAML reads `node: 3` as an int; workflow ids are strings
    input: str

    @property
    def node_id(self) -> str:
        return str(self.node)


class InputMapping(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Where the job's images and options go in the workflow.

    The two images name an image loader node (ComfyUI's LoadImage and its `image` input):
    the backend puts an in-memory loader with the same outputs in its place, so the job's
    images never touch the disk. Options without a target keep the workflow's own value.
    """

    person_image: Target
    garment_image: Target
    prompt: Union[Target, None] = None
    seed: Union[Target, None] = None
    steps: Union[Target, None] = None


class ComfyUISettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    path: str  # the ComfyUI root (the folder with nodes.py and execution.py)
    workflow: str  # an API-format workflow file
    inputs: InputMapping
    # The input that receives the final image (SaveImage's `images`): captured from there.
    output: Target
    models_dir: Union[str, None] = None  # default: <path>/models
    extra_model_paths: Union[str, None] = None  # an extra_model_paths.yaml of ComfyUI's format
    # Run the workflow once at start with placeholder images, so the first job finds the
    # weights loaded and on the device, like every later one.
    warmup: bool = True
    # Larger inputs are scaled down to this many pixels as they are decoded, before the
    # float tensor the graph wants (12 bytes a pixel); the Qwen graph works at ~1 MP anyway.
    input_max_pixels: Annotated[int, msgspec.Meta(ge=1)] = 4194304
    # The engine's own start-up options by their names in comfy/cli_args.py, underscored
    # (`highvram: true`, `fast: [fp8_matrix_mult]`); checked by comfyui_options.
    options: dict[str, Any] = {}
    # PyTorch's cudaMallocAsync allocator (PYTORCH_CUDA_ALLOC_CONF), as ComfyUI's own start
    # sets it; an operator's PYTORCH_CUDA_ALLOC_CONF is kept as it is.
    cuda_malloc: bool = True
    # Custom node packs: true loads the root's custom_nodes/, a list of folders loads
    # packs from those too.
    custom_nodes: Union[bool, list[str]] = False

    @property
    def custom_node_folders(self) -> list[str] | None:
        """Folders beside the root's custom_nodes/ to load packs from; None: no packs."""
        if self.custom_nodes is False:
            return None
        return [] if self.custom_nodes is True else list(self.custom_nodes)


class SettingsError(Exception):
    """The backend's settings are unusable; the message names the key."""


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def parse(raw: dict, config_dir: str, key: str = DEFAULT_KEY, check: bool = True) -> ComfyUISettings:
    """Typed settings with every path made absolute (relative: to the config's folder);
    `check`: raise SettingsError for the first path that is not there."""
    try:
        settings = msgspec.convert(raw, ComfyUISettings, strict=False)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        assert match is not None
        where = key + (match.group("path") or "")
        raise SettingsError(f"{where}: {match.group('msg')}") from None
    base = Path(config_dir)

    def absolute(value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(os.path.expanduser(value))
        return str(path if path.is_absolute() else (base / path).resolve())

    settings = msgspec.structs.replace(
        settings,
        path=absolute(settings.path),
        workflow=absolute(settings.workflow),
        models_dir=absolute(settings.models_dir),
        extra_model_paths=absolute(settings.extra_model_paths),
        custom_nodes=settings.custom_nodes if isinstance(settings.custom_nodes, bool)
        else [absolute(folder) for folder in settings.custom_nodes],
    )
    if check:
        check_paths(settings, key)
    return settings


def check_paths(settings: ComfyUISettings, key: str = DEFAULT_KEY) -> None:
    problems = path_problems(settings, key)
    if problems:
        raise SettingsError("; ".join(problems))


def path_problems(settings: ComfyUISettings, key: str = DEFAULT_KEY) -> list[str]:
    """Every configured path that is not there (also used by `gpu-server check-config`)."""
    problems = []
    root = Path(settings.path)
    if not (root / "execution.py").is_file() or not (root / "nodes.py").is_file():
        problems.append(f"{key}.path: {root} is not a ComfyUI root (no execution.py and nodes.py there)")
    if not Path(settings.workflow).is_file():
        problems.append(f"{key}.workflow: no file {settings.workflow}")
    if settings.models_dir is not None and not Path(settings.models_dir).is_dir():
        problems.append(f"{key}.models_dir: no folder {settings.models_dir}")
    if settings.extra_model_paths is not None and not Path(settings.extra_model_paths).is_file():
        problems.append(f"{key}.extra_model_paths: no file {settings.extra_model_paths}")
    for index, folder in enumerate(settings.custom_node_folders or []):
        if not Path(folder).is_dir():
            problems.append(f"{key}.custom_nodes[{index}]: no folder {folder}")
    return problems
