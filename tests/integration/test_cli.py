"""The console script: check-config and serve, with the contract's exit codes."""

from __future__ import annotations

import os
import socket
import subprocess

import yaml

from tests.support.node import GPU_SERVER, REPO, NodeProcess, base_config

BAD_CONFIG = """
node_id: "has spaces"
server: {port: 70000}
auth: {tokens: [short]}
callback: {url: "ftp://nowhere", token: "${UNSET_CALLBACK_TOKEN}"}
worker: {device: tpu}
surprise: true
"""


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GPU_SERVER), *args], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_check_config_accepts_the_shipped_development_config():
    result = run("check-config", "--config", str(REPO / "conf" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_reports_every_problem_with_its_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    for key in ("node_id:", "server.port:", "auth.tokens[0]:", "callback.token:", "worker.device:", "surprise:"):
        assert key in result.stderr, (key, result.stderr)
    assert "UNSET_CALLBACK_TOKEN" in result.stderr


def test_serve_with_a_bad_config_exits_2_without_listening(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "server.port:" in result.stderr


def test_missing_config_file_is_a_configuration_error(tmp_path):
    result = run("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr


def test_config_path_and_values_come_from_the_environment(tmp_path):
    config = base_config("${CB_URL}", 8080)
    config["server"]["port"] = "${PORT:-8123}"
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run("check-config", env={"GPU_SERVER_CONFIG": str(path), "CB_URL": "http://127.0.0.1:9/cb"})
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:8123" in result.stdout


def test_serve_exits_1_when_the_port_is_taken(tmp_path, receiver):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = NodeProcess(tmp_path, receiver.url)
        config = node.config | {"server": {"host": "127.0.0.1", "port": busy.getsockname()[1]}}
        node.config_path.write_text(yaml.safe_dump(config))
        node.start(wait=False)
        assert node.wait_exit(60) == 1
    assert node.events("startup_failed")
