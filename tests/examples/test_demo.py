"""`make demo` (examples/demo.py) when the stand-in's port is taken: it says why and what to do."""

from __future__ import annotations

import subprocess
import sys

import yaml

from tests.support.node import REPO, base_config, free_port


def test_a_stand_in_already_running_gets_a_hint_not_a_bare_error(tmp_path, stand_in):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(f"http://127.0.0.1:{stand_in.port}/callback", free_port())))
    result = subprocess.run(
        [sys.executable, "examples/demo.py", "--config", str(config)], capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert result.returncode != 0
    assert f"Something already listens on port {stand_in.port}" in result.stderr, result.stderr
    assert "python examples/asset_service.py" in result.stderr and "make demo" in result.stderr
    assert stand_in.poll() is None  # the demo left the running stand-in alone


def test_the_demo_runs_a_job_showing_its_progress_and_events(tmp_path):
    callback_port = free_port()
    config = base_config(f"http://127.0.0.1:{callback_port}/callback", free_port())
    config["events"] = {"url": f"http://127.0.0.1:{callback_port}/events", "min_interval_s": 0}
    config["spool"] = {"dir": str(tmp_path / "spool")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "examples/demo.py", "--config", str(path), "--steps", "12"], capture_output=True, text=True,
        cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "step 12/12" in out, out  # the progress line, at its last step at least
    assert "job.started demo-" in out, out  # the stand-in got the job's events
    assert "inference (node)" in out
