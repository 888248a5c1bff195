"""`gpu-server check-config`: what a start would find wrong, all at once, without starting.

The schema and the rules between keys are `config.parse`'s. Here comes what only the
machine can tell: the spool folder takes a write (or can be made), and the backend's files:
for `comfyui` the ComfyUI root, the workflow, the mapping against it and the model files it
names, and the engine's options against the engine's own parser where the engine is there.
Nothing here imports torch or ComfyUI (the supervisor never does: the options are judged in
a child process that imports only the engine's `comfy/cli_args.py`), and nothing is changed
on disk. The backend's settings, its workflow checks and the model files it names are read
with `comfyui_config`, the pure half of the ComfyUI backend that the worker runs too: the
same code judges the config here and at the worker's start, and none of the worker's.

A check is a function `(LoadedConfig) -> list[Problem]`. CHECKS run for every config,
BACKEND_CHECKS[backend] for that backend: a new check (one that asks the engine, say) is
one function and one entry there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from comfyui_config import checkpoint as comfyui_checkpoint, engine as comfyui_engine
from comfyui_config import models as comfyui_models, settings as comfyui_settings, workflow as comfyui_workflow
from supervisor.config import LoadedConfig
from supervisor.config.check import Broken, Problem, check, key_lines, locate
from supervisor.delivery.spool import PROBE_BYTES

Check = Callable[[LoadedConfig], list[Problem]]
OPTIONS_TIMEOUT_S = 60.0  # the child that reads the engine's options: argparse, a second at most


def run(loaded: LoadedConfig) -> list[Problem]:
    """Every problem a start of this config would meet, each with its line in the file.

    `loaded.config` may be a PartialView of a file with problems: a check that needs a
    key with a problem of its own is left out (its key is reported already)."""
    problems: list[Problem] = []
    try:
        backend_checks = BACKEND_CHECKS.get(loaded.config.worker.backend, [])
    except Broken:
        backend_checks = []
    for one_check in CHECKS + backend_checks:
        try:
            problems += one_check(loaded)
        except Broken:
            continue
    try:
        lines = key_lines(loaded.path.read_text(encoding="utf-8"))
    except OSError:
        lines = {}
    return locate(problems, lines)


def _as_problem(text: str) -> Problem:
    """`key.path: message` (the backend modules' form) as a Problem."""
    path, _, message = text.partition(": ")
    return Problem(path, message)


# --- every config ---------------------------------------------------------------------


def spool_folder(loaded: LoadedConfig) -> list[Problem]:
    """The start writes 1 MiB into the spool folder and refuses a folder that cannot take
    it; the same probe here, or, for a folder not made yet, whether it can be made."""
    folder = loaded.spool_dir
    where = "spool.dir" if loaded.config.spool.dir else "spool.dir (default: spool/ beside the config file)"
    if folder.exists():
        if not folder.is_dir():
            return [Problem(where, f"{folder} is not a folder")]
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".check-config-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(b"\0" * PROBE_BYTES)
                    f.flush()
                    os.fsync(f.fileno())
            finally:
                os.unlink(probe)
        except OSError as exc:
            return [Problem(where, f"cannot write {PROBE_BYTES} bytes in {folder}: {exc.strerror or exc}")]
        return []
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return [Problem(where, f"{folder} does not exist, and {parent} is not a folder it can be made in")]
    return []


# --- the comfyui backend --------------------------------------------------------------


def comfyui_files(loaded: LoadedConfig) -> list[Problem]:
    """model.comfyui: its keys, the ComfyUI root, the workflow, the mapping, the model files,
    and the workflow's own steps against limits.steps."""
    key = comfyui_settings.DEFAULT_KEY
    raw = loaded.config.model.comfyui
    problems = check(raw, comfyui_settings.ComfyUISettings, key)
    if problems:
        return problems  # the paths below need the settings to be valid
    settings = comfyui_settings.parse(raw, str(loaded.base_dir), key, check=False)
    problems = [_as_problem(p) for p in comfyui_settings.path_problems(settings, key)]
    if Path(settings.workflow).is_file():
        try:
            workflow = comfyui_workflow.load(settings.workflow)
        except comfyui_workflow.WorkflowError as exc:
            problems += [Problem(f"{key}.workflow", p) for p in exc.problems]
        else:
            problems += [_as_problem(p) for p in comfyui_workflow.check_without_engine(workflow, settings, key)]
            problems += _model_files(settings, workflow, key)
            problems += _workflow_steps(loaded, settings, workflow)
    return problems


def _workflow_steps(loaded: LoadedConfig, settings: comfyui_settings.ComfyUISettings, workflow: dict) -> list[Problem]:
    """A job that names no steps runs the workflow's own count: it must be one limits.steps
    allows (a 20-step workflow on a node limited to [4, 4] is a config mistake)."""
    target = settings.inputs.steps
    try:
        low, high = loaded.config.limits.steps
    except Broken:
        return []  # reported as a problem of its own
    node = workflow.get(target.node_id) if target is not None else None
    value = node["inputs"].get(target.input) if node is not None and target is not None else None
    if not isinstance(value, int) or isinstance(value, bool) or low <= value <= high:
        return []  # not mapped, not in the workflow (reported above), a link, or within
    return [Problem("limits.steps", f"[{low}, {high}] leaves out the workflow's own steps ({value}, node "
                                    f"{target.node_id!r} input {target.input!r}), which a job naming no steps runs")]


def _model_files(settings: comfyui_settings.ComfyUISettings, workflow: dict, key: str) -> list[Problem]:
    models_dir = settings.models_dir or str(Path(settings.path) / "models")
    if not Path(models_dir).is_dir():
        if settings.models_dir is None and Path(settings.path).is_dir():
            return [Problem(f"{key}.models_dir", f"not set, and the ComfyUI root has no models/ folder ({models_dir})")]
        return []  # reported above
    folders = comfyui_models.model_folders(models_dir, settings.extra_model_paths)
    return [
        Problem(
            f"{key}.models_dir",
            f"model file {m.file!r} (node {m.node_id!r} {m.class_type}, input {m.input!r}) is in none of the "
            f"model folders ({models_dir}/*/" + (", extra_model_paths" if settings.extra_model_paths else "") + ")",
        )
        for m in comfyui_models.missing(comfyui_models.model_inputs(workflow), folders)
    ]


def comfyui_options(loaded: LoadedConfig) -> list[Problem]:
    """model.comfyui.options: each one the worker would refuse, where the engine is here to
    judge them (its comfy/cli_args.py under model.comfyui.path; otherwise the worker's start
    is where they are checked)."""
    key = comfyui_settings.DEFAULT_KEY
    raw = loaded.config.model.comfyui
    if check(raw, comfyui_settings.ComfyUISettings, key):
        return []  # reported by comfyui_files
    settings = comfyui_settings.parse(raw, str(loaded.base_dir), key, check=False)
    if not settings.options or not (Path(settings.path) / "comfy" / "cli_args.py").is_file():
        return []
    package_root = str(Path(comfyui_settings.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    where = f"{key}.path"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "gpu_worker.backends.comfyui.options", settings.path, key],
            input=json.dumps(settings.options, default=str), capture_output=True, text=True, timeout=OPTIONS_TIMEOUT_S, env=env,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Problem(where, f"the engine's options could not be read from {settings.path}: {exc}")]
    try:
        problems = json.loads(result.stdout.strip().splitlines()[-1])["problems"]
    except (ValueError, IndexError, KeyError, TypeError):
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return [Problem(where, f"the engine's options could not be read from {settings.path}: {why}")]
    return [_as_problem(p) for p in problems]


def _comfyui_parts(loaded: LoadedConfig):
    """(settings, workflow) when both can be read; None otherwise (reported elsewhere)."""
    key = comfyui_settings.DEFAULT_KEY
    raw = loaded.config.model.comfyui
    if check(raw, comfyui_settings.ComfyUISettings, key):
        return None
    settings = comfyui_settings.parse(raw, str(loaded.base_dir), key, check=False)
    if not Path(settings.workflow).is_file() or not Path(settings.path).is_dir():
        return None
    try:
        return settings, comfyui_workflow.load(settings.workflow)
    except comfyui_workflow.WorkflowError:
        return None


def comfyui_engine_fit(loaded: LoadedConfig) -> list[Problem]:
    """What the worker's start would refuse for good: a diffusion model (read from its
    safetensors header) or a reference method this engine (read from its files) cannot run
    right: a Qwen-Image-Edit-2511 checkpoint without index_timestep_zero, say."""
    parts = _comfyui_parts(loaded)
    if parts is None:
        return []
    settings, workflow = parts
    key = comfyui_settings.DEFAULT_KEY
    root = Path(settings.path)
    abilities = comfyui_checkpoint.Abilities(
        comfyui_engine.read_version(root), comfyui_engine.reference_methods_in_source(root),
        comfyui_engine.reads_comfy_quant(root))
    models_dir = settings.models_dir or str(root / "models")
    folders = comfyui_models.model_folders(models_dir, settings.extra_model_paths) if Path(models_dir).is_dir() else []
    problems = [Problem(f"{key}.workflow", p) for p in comfyui_checkpoint.method_refusals(workflow, abilities)]
    for _node_id, _folder, name in comfyui_checkpoint.diffusion_files(workflow):
        path = next((folder / name for folder in folders if (folder / name).is_file()), None)
        if path is None:
            continue  # reported by comfyui_files
        try:
            header = comfyui_checkpoint.read_header(path)
        except comfyui_checkpoint.CheckpointError:
            continue  # the engine's loader judges a file that is no safetensors (a .ckpt, say)
        problems += [Problem(f"{key}.models_dir", p) for p in comfyui_checkpoint.refusals(name, header, abilities)]
    return problems


def warnings(loaded: LoadedConfig) -> list[str]:
    """What a start would say at WARNING without refusing: an engine version this node is
    not tested with (comfyui_config.engine.TESTED)."""
    try:
        if loaded.config.worker.backend != "comfyui":
            return []
        raw = loaded.config.model.comfyui
    except Broken:
        return []
    key = comfyui_settings.DEFAULT_KEY
    if check(raw, comfyui_settings.ComfyUISettings, key):
        return []
    settings = comfyui_settings.parse(raw, str(loaded.base_dir), key, check=False)
    if not Path(settings.path).is_dir():
        return []
    untested = comfyui_engine.untested_warning(comfyui_engine.info(Path(settings.path)))
    return [f"{key}.path: {untested}"] if untested else []


CHECKS: list[Check] = [spool_folder]
BACKEND_CHECKS: dict[str, list[Check]] = {"comfyui": [comfyui_files, comfyui_options, comfyui_engine_fit]}
