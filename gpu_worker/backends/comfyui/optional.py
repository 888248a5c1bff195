"""Stand-ins for packages ComfyUI imports at start but a try-on workflow never uses.

ComfyUI 0.3.75 imports `av` (its node API's video types, video and audio nodes) and `scipy`
(the lms sampler, the beta scheduler, mask nodes) unconditionally: without them even the
Qwen nodes do not load. Their wheels are ~70 MB, more than everything else an offline GPU
host needs (deploy/gpu_wheels.py). `install()` runs before the engine is imported:
for each of OPTIONAL that is not installed it serves a stand-in module under that name.
Importing it or its submodules works; using anything from it (a call, a subclass) raises
ModuleNotFoundError naming the package and what needs it. An installed package is never
replaced.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

OPTIONAL = {
    "av": "ComfyUI's video and audio nodes",
    "scipy": "ComfyUI's lms sampler, beta scheduler and mask nodes",
}


def _missing(name: str) -> ModuleNotFoundError:
    package = name.split(".", 1)[0]
    return ModuleNotFoundError(
        f"{name}: the package {package!r} is not installed; {OPTIONAL.get(package, 'ComfyUI')} need it "
        f"(pip install {package})", name=package,
    )


class Absent:
    """What a stand-in module hands out: fine in imports and annotations, fails when used."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Absent:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Absent(f"{self._name}.{attribute}")

    def __call__(self, *args, **kwargs):
        raise _missing(self._name)

    def __mro_entries__(self, bases):
        raise _missing(self._name)

    def __repr__(self) -> str:
        return f"<absent {self._name}>"


class StandIn(types.ModuleType):
    def __getattr__(self, attribute: str) -> Absent:
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        return Absent(f"{self.__name__}.{attribute}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, packages: set[str]) -> None:
        self.packages = packages

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] not in self.packages:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        return StandIn(spec.name)

    def exec_module(self, module) -> None:
        pass


def is_installed(package: str) -> bool:
    if package in sys.modules:
        return not isinstance(sys.modules[package], StandIn)
    try:
        return importlib.util.find_spec(package) is not None
    except ImportError:
        return False


# Packages a newer engine imports unconditionally, with no stand-in possible (their code runs
# at import): module -> (the engine file that imports it, the PyPI name). Upstream's
# model_management imports comfy_aimdo (its dynamic VRAM); comfy_kitchen (its quantised
# kernels) is an optional import there, so it is never stood in for: an absent one is
# what that engine expects.
REQUIRED_BY_ENGINE = {"comfy_aimdo": ("comfy/model_management.py", "comfy-aimdo")}


def missing_required(root: str) -> list[str]:
    """The packages the engine at `root` imports at module level that are not installed,
    each as a line naming the package and the file that needs it (0.3.75: none)."""
    import re
    from pathlib import Path

    problems = []
    for module, (file, package) in REQUIRED_BY_ENGINE.items():
        try:
            source = (Path(root) / file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if re.search(rf"^(import {module}\b|from {module}\b)", source, re.MULTILINE) and not is_installed(module):
            problems.append(f"the engine's {file} imports {module}, which is not installed (pip install {package})")
    return problems


def install() -> list[str]:
    """Serve stand-ins for the OPTIONAL packages that are not installed; their names."""
    missing = sorted(p for p in OPTIONAL if not is_installed(p) and p not in sys.modules)
    if missing:
        # First on the path: a name already found missing is ours to serve.
        sys.meta_path.insert(0, _Finder(set(missing)))
    return missing
