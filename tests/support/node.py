"""A real `gpu-server serve` process for integration tests, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.support.logfile import read_events, wait_for_event

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
CALLBACK_TOKEN = "callback-secret-for-tests"
GPU_SERVER = Path(sys.executable).parent / "gpu-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def base_config(callback_url: str, port: int) -> dict[str, Any]:
    return {
        "node_id": "test-node",
        "server": {"host": "127.0.0.1", "port": port},
        "auth": {"tokens": [TOKEN]},
        "callback": {"url": callback_url, "token": CALLBACK_TOKEN, "timeout_s": 5, "max_retries": 3},
        "worker": {"backend": "reference", "device": "cpu", "heartbeat_interval_s": 0.5},
        "shutdown": {"drain_timeout_s": 20},
        "logging": {"level": "INFO"},
    }


class NodeProcess:
    def __init__(
        self, workdir: Path, callback_url: str, overrides: dict | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.env = env or {}
        self.port = free_port()
        self.config = deep_merge(base_config(callback_url, self.port), overrides or {})
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.stdout_path = workdir / "node.stdout.log"
        self.stderr_path = workdir / "node.stderr.log"
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True, timeout: float = 90.0) -> NodeProcess:
        self.process = subprocess.Popen(
            [str(GPU_SERVER), "serve", "--config", str(self.config_path)],
            cwd=REPO,  # so a test backend `tests.support...:Class` is importable in the worker
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        self.wait_health(200, timeout)

    def wait_health(self, status: int, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode}\n{self.tail()}")
            try:
                code, body = self.get("/health")
                last = (code, body)
                if code == status:
                    return body
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise AssertionError(f"/health never answered {status} within {timeout} s (last: {last})\n{self.tail()}")

    def request_statuses(self, route: str) -> set[str]:
        """The statuses `gpu_server_requests_total` has counted for `route` so far."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = self.get("/metrics")
        return {
            sample.labels["status"]
            for family in text_string_to_metric_families(text)
            if family.name == "gpu_server_requests"
            for sample in family.samples
            if sample.name.endswith("_total") and sample.labels["route"] == route
        }

    def get(self, path: str, token: str | None = None, headers: dict | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, headers=dict(headers or {}))
        if token is not None:
            request.add_header("X-Internal-Auth", token)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, _body(response.read(), response.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as error:
            return error.code, _body(error.read(), error.headers.get("Content-Type", ""))

    def gpu_status(self) -> dict:
        code, body = self.get("/gpu/status", token=TOKEN)
        assert code == 200, body
        return body

    def worker_pid(self) -> int:
        pid = self.gpu_status()["worker"]["pid"]
        assert pid is not None
        return pid

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 60.0) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"node did not stop within {timeout} s\n{self.tail()}")

    def log_lines(self) -> list[str]:
        return self.stdout_path.read_text(errors="replace").splitlines()

    def events(self, name: str | None = None) -> list[dict]:
        return read_events(self.stdout_path, name)

    def wait_event(self, name: str, timeout: float = 60.0, **match: Any) -> dict:
        """Until the node logged `name` with fields equal to `match`."""
        return wait_for_event(self.stdout_path, name, timeout, self.tail, **match)

    def tail(self, lines: int = 60) -> str:
        out = "\n".join(self.log_lines()[-lines:])
        err = self.stderr_path.read_text(errors="replace")[-4000:] if self.stderr_path.exists() else ""
        return f"--- stdout (last {lines} lines)\n{out}\n--- stderr\n{err}"


def _body(raw: bytes, content_type: str) -> Any:
    if "json" in content_type:
        return json.loads(raw)
    return raw.decode(errors="replace")
