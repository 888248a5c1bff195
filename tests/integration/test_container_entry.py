"""The node started as the image starts it: `gpu-server serve` with the config named by
$GPU_SERVER_CONFIG (no --config), watched by the image's HEALTHCHECK script, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import yaml

from tests.support.logfile import wait_for_event
from tests.support.node import GPU_SERVER, REPO, base_config, free_port

HEALTHCHECK = REPO / "deploy" / "docker" / "healthcheck.py"


def healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)], capture_output=True, text=True, timeout=30,
        env={**os.environ, "GPU_SERVER_PORT": str(port)},
    )


def test_serve_from_the_environment_passes_the_healthcheck_and_stops_on_sigterm(tmp_path, receiver):
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(receiver.url, port)))
    log = tmp_path / "node.log"
    node = subprocess.Popen(
        [str(GPU_SERVER), "serve"], cwd=tmp_path, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "GPU_SERVER_CONFIG": str(config), "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for_event(log, "node_started", 60, lambda: log.read_text(errors="replace")[-4000:])
        result = healthcheck(port)
        assert result.returncode == 0, result.stderr
        node.send_signal(signal.SIGTERM)
        assert node.wait(60) == 0
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(10)
    closed = healthcheck(port)
    assert closed.returncode == 1 and "/health/live" in closed.stderr
