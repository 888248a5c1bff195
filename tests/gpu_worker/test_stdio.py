"""The worker keeps stdout for its JSON log: what libraries print is captured, not mixed in."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = """
import os, sys
from ipc import jsonlog
from gpu_worker.stdio import capture_stdout
jsonlog.setup("n", "gpu_worker", "INFO", capture_stdout())
print("a library says hello")
sys.stdout.write("partial line without newline")
sys.stdout.flush()
os.write(1, b"raw bytes from C code\\n")
jsonlog.EventLog("w").info("worker_ready")
"""


def test_prints_become_events_and_raw_writes_go_to_stderr():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    outputs = [e["line"] for e in entries if e["event"] == "library_output"]
    assert outputs == ["a library says hello", "partial line without newline"]
    assert entries[-1]["event"] == "worker_ready"
    assert "raw bytes from C code" in result.stderr
