"""The node run from the real image: `docker run` of the test image (make image-test), as
Kubernetes runs it (uid 10001, read-only root, a tmpfs /tmp, the spool on a volume), on the
host's network so it reaches the callback receiver on 127.0.0.1.

`ContainerNode` is a `NodeProcess` whose process is the attached `docker run`: its stdout is
the container's (the node's JSON log, read by `events()` and `wait_event()`), its exit status
the container's. The config is the test's, mounted read-only at CONFIG and named by
GPU_SERVER_CONFIG, as the StatefulSet mounts its ConfigMap.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.docker import build_test_image
from deploy.docker.build_test_image import Docker
from tests.support.node import REPO, NodeProcess, deep_merge

CONFIG = "/etc/gpu-server/test/config.yaml"
SPOOL = "/var/lib/gpu-server/spool"
TESTS_ROOT = "/opt/gpu-server-tests"  # tests/ and bench/, for a test backend by import path
STOP_TIMEOUT_S = 60


def image_config(docker: Docker, tag: str) -> dict:
    (inspected,) = json.loads(docker.text("image", "inspect", tag))
    return inspected


class ContainerNode(NodeProcess):
    def __init__(self, docker: Docker, image: str, workdir: Path, callback_url: str, overrides: dict | None = None,
                 *, volume: str, mounts: dict[Path, str] | None = None, env: dict[str, str] | None = None) -> None:
        super().__init__(workdir, callback_url, deep_merge({"spool": {"dir": SPOOL}}, overrides or {}), env)
        self.config_path.chmod(0o644)  # read by uid 10001 through its own bind mount
        self.docker, self.image, self.volume = docker, image, volume
        self.mounts = mounts or {}
        self.name = f"gpu-server-test-{uuid.uuid4().hex[:10]}"

    def run_args(self) -> list[str]:
        args = ["run", "--name", self.name, "--network", "host", "--read-only",
                # Kubernetes' emptyDir (the StatefulSet's /tmp) allows exec; Docker's --tmpfs not by default.
                "--tmpfs", "/tmp:rw,exec,size=2g,mode=1777",
                "-v", f"{self.volume}:{SPOOL}", "-v", f"{self.config_path}:{CONFIG}:ro",
                # The StatefulSet's environment (deploy/k8s/statefulset.yaml).
                "-e", f"GPU_SERVER_CONFIG={CONFIG}", "-e", "HOME=/tmp", "-e", "XDG_CACHE_HOME=/tmp/.cache",
                # The port the HEALTHCHECK asks (the production config listens on it too).
                "-e", f"GPU_SERVER_PORT={self.port}",
                # The image's HEALTHCHECK command, checked every second rather than every 30.
                "--health-interval", "1s", "--stop-timeout", str(STOP_TIMEOUT_S)]
        for source, target in self.mounts.items():
            args += ["-v", f"{source}:{target}:ro"]
        for name, value in self.env.items():
            args += ["-e", f"{name}={value}"]
        return [*args, self.image]

    def start(self, wait: bool = True, timeout: float = 120.0) -> ContainerNode:
        self.process = subprocess.Popen(["docker", *self.run_args()], env=self.docker.env,
                                        stdout=self.stdout_path.open("wb"), stderr=self.stderr_path.open("wb"))
        if wait:
            self.wait_ready(timeout)
        return self

    def signal(self, signum: int) -> None:
        self.docker("kill", "-s", str(int(signum)), self.name)

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return self.docker("exec", self.name, *command, check=False)

    def inspect(self, template: str) -> str:
        return self.docker.text("inspect", "--format", template, self.name)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.inspect("{{.State.Health.Status}}")
            if status == "healthy":
                return
            if status == "unhealthy":
                break
            time.sleep(0.2)  # Docker has no wait for a health status
        health = self.inspect("{{json .State.Health}}")
        raise AssertionError(f"the container's HEALTHCHECK says {status!r}: {health}\n{self.tail()}")

    def stop(self, timeout: float = STOP_TIMEOUT_S + 30) -> int | None:
        """`docker stop`: SIGTERM to tini, which hands it to gpu-server (the drain)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.docker("stop", "-t", str(STOP_TIMEOUT_S), self.name, timeout=timeout)
        return self.process.wait(30)

    def remove(self) -> None:
        self.docker("rm", "-f", self.name, check=False)
        if self.process is not None and self.process.poll() is None:
            self.process.wait(30)


def test_mounts() -> dict[Path, str]:
    """tests/ and bench/ of the checkout, read-only, for `worker.backend: tests.support...`."""
    return {REPO / "tests": f"{TESTS_ROOT}/tests", REPO / "bench": f"{TESTS_ROOT}/bench"}


def docker_or_skip():
    """The engine and the test image (built now if its layers changed), or a skip where
    Docker cannot run at all (not root, no overlay)."""
    reason = build_test_image.cannot_run()
    if reason:
        pytest.skip(f"Docker cannot run here: {reason}")
    return build_test_image.engine()


def write_config(node: ContainerNode, config: dict[str, Any]) -> None:
    """Rewrites the mounted config in place (same inode: the bind mount sees it)."""
    node.config = config
    with node.config_path.open("r+") as file:
        file.truncate(0)
        file.write(yaml.safe_dump(config))
