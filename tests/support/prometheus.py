"""promtool and a real Prometheus server for the observability tests.

Both come from Debian's `prometheus` package, unpacked into .venv/tools/ by `make tools`
(which `make test` runs). Missing binaries fail the test loudly: a silent skip would let
CI pass without ever checking the rules or the exposition.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.node import REPO, free_port

TOOLS = Path(sys.executable).resolve().parent.parent / "tools" / "prometheus" / "usr" / "bin"
if not TOOLS.is_dir():  # a venv whose python is a symlink out of it: trust the repo's .venv
    TOOLS = REPO / ".venv" / "tools" / "prometheus" / "usr" / "bin"
DEPLOY = REPO / "deploy" / "prometheus"


def tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make tools` (make test does) to unpack Debian's prometheus package")
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(tool("promtool")), *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO
    )


_COMMENTED_AUTHORIZATION = re.compile(r"^(\s*)# ((?:authorization:|  type: Bearer|  credentials_file: ).*)$", re.M)


def with_authorization(text: str) -> str:
    """The deploy scrape config with its commented-out bearer token block turned on, as an
    operator whose nodes set `metrics.token` does."""
    enabled = _COMMENTED_AUTHORIZATION.sub(r"\1\2", text)
    assert enabled != text, "the scrape config has no commented authorization block"
    return enabled


class PrometheusServer:
    """Prometheus on 127.0.0.1 with the project's own scrape config and rules, aimed at one node.

    The deploy config is used as it is, except for what a test must change: the target,
    a 1 s scrape and rule interval, and the bearer token file.
    """

    def __init__(self, workdir: Path, target: str, token: str | None) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = yaml.safe_load(with_authorization((DEPLOY / "prometheus.yml").read_text()))
        config["global"].update(scrape_interval="1s", evaluation_interval="1s")
        config["rule_files"] = [str(DEPLOY / name) for name in config["rule_files"]]
        (job,) = config["scrape_configs"]
        job.update(scrape_interval="1s", scrape_timeout="1s")
        job["static_configs"] = [{"targets": [target]}]
        if token is None:
            del job["authorization"]
        else:
            token_file = workdir / "metrics.token"
            token_file.write_text(token)
            job["authorization"]["credentials_file"] = str(token_file)
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self.process = subprocess.Popen(
            [
                str(tool("prometheus")),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
        )
        self.wait_until(lambda: self._ready(), "Prometheus ready")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # a bad query: 400 with a JSON body saying why
            return json.loads(error.read())

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)

    def wait_until(self, check, what: str, timeout: float = 60.0) -> Any:
        """Poll `check` until it returns something truthy (Prometheus offers no event to await)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.process.returncode}\n{self.log_tail()}")
            result = check()
            if result:
                return result
            time.sleep(0.2)
        raise AssertionError(f"{what}: not within {timeout} s\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False
