from __future__ import annotations

import subprocess
import sys

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from supervisor.metrics.worker_collector import WorkerProcessCollector


def scrape(pid_of) -> dict[str, list]:
    registry = CollectorRegistry()
    registry.register(WorkerProcessCollector(pid_of))
    text = generate_latest(registry).decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_figures_of_a_live_process():
    # A real child that burns some CPU first, so its CPU seconds cannot be 0.
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys\nx = sum(range(3_000_000))\nprint('go', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout.readline() == b"go\n"
        families = scrape(lambda: child.pid)
        assert families["gpu_server_worker_resident_memory_bytes"][0].value > 1024 * 1024
        (cpu,) = families["gpu_server_worker_cpu_seconds"]
        assert cpu.name == "gpu_server_worker_cpu_seconds_total" and cpu.value > 0
    finally:
        child.stdin.close()
        child.wait(10)


def test_no_worker_or_a_vanished_one():
    for pid in (None, _dead_pid()):
        families = scrape(lambda: pid)
        assert families["gpu_server_worker_resident_memory_bytes"][0].value == 0
        assert families["gpu_server_worker_cpu_seconds"] == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(10)
    return child.pid
