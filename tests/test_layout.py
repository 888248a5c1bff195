"""The layout is the architecture: each area a package, no import circles, the two processes
apart, and the tests mirroring the modules.

Read from the source (ast), not by importing it: an import under TYPE_CHECKING or inside a
function counts as much as one at the top, since a circle through either is one a reader
has to untangle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("supervisor", "gpu_worker", "ipc", "comfyui_config")
# What each package may import of the others: the supervisor never runs the worker's code
# (it spawns it), the worker never the supervisor's; ipc is the bridge both import, and
# comfyui_config the pure half of the ComfyUI backend, read by the worker and check-config.
MAY_IMPORT = {
    "supervisor": {"ipc", "comfyui_config"},
    "gpu_worker": {"ipc", "comfyui_config"},
    "ipc": set(),
    "comfyui_config": set(),
}
# comfyui_config is imported by the supervisor's process: nothing heavy, nothing of the engine.
COMFYUI_CONFIG_THIRD_PARTY = {"msgspec", "yaml"}


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


MODULES = module_files()


def imported(name: str, path: Path) -> set[str]:
    """Every module `name` names in an import, anywhere in it (project and others alike)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                # `from pkg import module` imports the module; `from pkg import name`, pkg.
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {name: {m for m in imported(name, path) if m in MODULES and m != name} for name, path in MODULES.items()}


def cycles() -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(GRAPH)))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read():
    # A reader that found nothing would pass every test below.
    assert len(MODULES) > 80
    assert "supervisor.worker.lifecycle.events" in GRAPH["supervisor.worker.lifecycle.core"]
    assert "supervisor.http.services" in GRAPH["supervisor.http.app"]  # under TYPE_CHECKING


def test_no_import_circles():
    assert cycles() == []


def test_the_circle_finder_finds_one(monkeypatch):
    monkeypatch.setitem(GRAPH, "supervisor.jobs.job", GRAPH["supervisor.jobs.job"] | {"supervisor.jobs.scheduler"})
    assert ["supervisor.jobs.job", "supervisor.jobs.scheduler"] in cycles()


@pytest.mark.parametrize("package", PACKAGES)
def test_each_side_imports_only_what_it_may(package):
    crossings = sorted(
        f"{name} imports {target}"
        for name, targets in GRAPH.items() if name.split(".")[0] == package
        for target in targets
        if target.split(".")[0] != package and target.split(".")[0] not in MAY_IMPORT[package]
    )
    assert crossings == []


def test_the_supervisor_never_imports_torch_or_the_engine():
    heavy = ("torch", "numpy", "comfy", "comfy_execution", "folder_paths", "nodes", "execution")
    for name, path in MODULES.items():
        if name.split(".")[0] in ("supervisor", "ipc", "comfyui_config"):
            assert not {m for m in imported(name, path) if m.split(".")[0] in heavy}, name


def test_comfyui_config_is_pure():
    allowed = COMFYUI_CONFIG_THIRD_PARTY | set(sys.stdlib_module_names) | {"comfyui_config", "__future__"}
    for name, path in MODULES.items():
        if name.split(".")[0] == "comfyui_config":
            assert {m.split(".")[0] for m in imported(name, path)} <= allowed, name


def test_each_area_is_a_package_whose_modules_drop_its_name():
    # supervisor/worker/ holds spawn.py, not worker_spawn.py; and no worker_*.py is left
    # beside the worker/ package.
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    prefixed = sorted(
        name for name in MODULES
        if name not in packages and any(
            name.rpartition(".")[2].startswith(pkg.rpartition(".")[2] + "_")
            and name.rpartition(".")[0] in (pkg, pkg.rpartition(".")[0])
            for pkg in packages if "." in pkg
        )
    )
    assert prefixed == []
    for area in ("http", "jobs", "worker", "delivery", "metrics", "gpu", "config"):
        assert f"supervisor.{area}" in packages
    assert "gpu_worker.backends.comfyui" in packages


def test_package_inits_import_nothing_of_the_project():
    # Importing one module of an area must not import the area: the ComfyUI options child
    # of check-config imports gpu_worker.backends.comfyui.options, and must not pull in torch
    # (the config package's __init__ is the one whose job is to gather its parts).
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name != "supervisor.config":
            assert not {m for m in GRAPH[name]}, name


def mirrored_module(test: Path) -> str | None:
    parts = test.relative_to(REPO / "tests").with_suffix("").parts
    folder, stem = parts[:-1], parts[-1].removeprefix("test_")
    for name in (".".join(folder + (stem,)), ".".join(folder) if folder[-1] == stem else None):
        if name in MODULES:
            return name
    return None


def test_unit_tests_mirror_the_modules():
    tests = [p for package in PACKAGES for p in (REPO / "tests" / package).rglob("test_*.py")]
    assert len(tests) > 60
    assert [str(t.relative_to(REPO)) for t in tests if mirrored_module(t) is None] == []
    for folder in {t.parent for t in tests}:
        assert (folder / "__init__.py").is_file(), folder
