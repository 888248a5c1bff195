"""bench/gpu_check.py, the script for GPU machines, runs its whole path here on the CPU."""

from __future__ import annotations

import subprocess
import sys

from tests.support.node import REPO


def test_gpu_check_runs_on_the_cpu_with_gpu_checks_skipped():
    result = subprocess.run(
        [sys.executable, "bench/gpu_check.py", "--device", "cpu", "--jobs", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=170,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "PASS  every job succeeded" in out and "FAIL" not in out
    assert "gpu_server_nvml_up" in out and '"gpus": []' in out  # it printed /metrics and /gpu/status
