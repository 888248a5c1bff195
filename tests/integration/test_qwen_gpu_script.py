"""bench/qwen_gpu.py, the full-size GPU run of the Qwen workflow: its whole path here on the
CPU (--dry-run: the test backend, the weights shrunk as in CI), GPU checks skipped."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.comfyui import require_root
from tests.support.node import REPO


def test_help_documents_the_gpu_run():
    result = subprocess.run([sys.executable, "bench/qwen_gpu.py", "--help"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for words in ("--jobs", "--dry-run", "--models-dir", "--work-dir", "make gpu-wheels", "8 minutes", "NVML"):
        assert words in result.stdout


@pytest.mark.timeout(600)
def test_a_dry_run_goes_the_whole_way_on_the_cpu():
    require_root()
    result = subprocess.run([sys.executable, "bench/qwen_gpu.py", "--dry-run", "--jobs", "1"], cwd=REPO,
                            capture_output=True, text=True, timeout=580)
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
    assert "PASS  every job succeeded" in out and "FAIL" not in out
    assert "PASS  node stopped cleanly, worker gone" in out and "PASS  work folder removed" in out
    for row in ("| load to ready", "| first job", "| job, POST to callback, p50 / p90 (n=1)",
                "| worker resident memory", "|   sampling, per step", "|   text encode", "|   callback"):
        assert row in out, out[-3000:]
