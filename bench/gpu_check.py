"""The GPU machine check of the observability work: a real node on CUDA, jobs, then what it reports.

    python bench/gpu_check.py [--device cuda] [--jobs 3]

Starts a node (reference backend, `worker.device` as given) on 127.0.0.1 with a local
callback receiver, runs a few jobs, then prints /metrics, /gpu/status, the worker's own GPU
memory as NVML sees it, the cost of an NVML read and of a /metrics scrape, and a list of
checks (PASS / FAIL / SKIP). Exit status 1 if any check fails. With `--device cpu` it runs
the same path on a machine without a GPU, the GPU checks skipped.

Needs the project's runtime packages (torch from the machine is fine) and, for the node
command, either the `gpu-server` console script beside this Python or the checkout itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ipc import jsonlog  # noqa: E402
from supervisor.gpu.selection import worker_gpus  # noqa: E402
from supervisor.gpu.nvml import Nvml  # noqa: E402
from tests.support import node as node_support  # noqa: E402
from tests.support.client import submit, tryon_form  # noqa: E402
from tests.support.node import TOKEN, NodeProcess  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402


class CheckedNode(NodeProcess):
    """NodeProcess, started with `python -m supervisor` where no console script is installed."""

    def start(self, wait: bool = True, timeout: float = 600.0) -> CheckedNode:
        if node_support.GPU_SERVER.exists():
            super().start(wait=False)
        else:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "supervisor", "serve", "--config", str(self.config_path)],
                cwd=REPO,
                stdout=self.stdout_path.open("wb"),
                stderr=self.stderr_path.open("wb"),
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if wait:
            self.wait_ready_or_failed(timeout)
        return self

    def wait_ready_or_failed(self, timeout: float) -> None:
        """Ready, or the first worker start-up failure (wrong device, no CUDA): no endless retries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            failed = self.events("worker_startup_failed")
            if failed:
                raise RuntimeError(f"the worker cannot start: {failed[0].get('error')}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass  # not listening yet
            time.sleep(0.2)
        raise RuntimeError(f"not ready within {timeout} s")


class Checks:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    def check(self, name: str, ok: bool, detail: object = "") -> None:
        self.rows.append(("PASS" if ok else "FAIL", name, str(detail)))

    def skip(self, name: str, why: str) -> None:
        self.rows.append(("SKIP", name, why))

    def report(self) -> bool:
        print("\n== checks")
        for verdict, name, detail in self.rows:
            print(f"{verdict:4}  {name}  {detail}")
        return all(verdict != "FAIL" for verdict, _, _ in self.rows)


def percentiles(samples: list[float], scale: float) -> str:
    ordered = sorted(samples)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered) * scale:.1f}, p99 {p99 * scale:.1f} (n={len(ordered)})"


def section(title: str) -> None:
    print(f"\n== {title}", flush=True)


def nvml_direct(device: str) -> tuple[Nvml, list]:
    """NVML as the supervisor uses it, in this process: which GPU, and what one read costs."""
    section("NVML in this process")
    nvml = Nvml()
    nvml.start()
    refs = worker_gpus(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
    print(f"up={nvml.up} reason={nvml.reason} CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} "
          f"worker.device={device} -> NVML refs {refs}")
    if nvml.up:
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            nvml.read(refs)
            samples.append(time.perf_counter() - t0)
        print(f"one read of the worker's GPU(s), microseconds: {percentiles(samples, 1e6)}")
        print(json.dumps([g.as_dict() for g in nvml.read(refs)], indent=2))
    return nvml, refs


def worker_gpu_memory(nvml: Nvml, refs: list, worker_pid: int) -> int | None:
    """The worker's own memory on its GPU, from NVML's list of compute processes."""
    if not nvml.up or not refs:
        return None
    import pynvml

    for gpu in nvml.read(refs):
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu.index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            print(f"GPU {gpu.index} compute process pid={proc.pid} used_gpu_memory={proc.usedGpuMemory}")
            if proc.pid == worker_pid:
                return int(proc.usedGpuMemory or 0)
    return None


async def run_jobs(node: NodeProcess, receiver: CallbackReceiver, n: int) -> list[dict]:
    results = []
    async with aiohttp.ClientSession() as http:
        for i in range(n):
            job_id = f"gpu-check-{i}"
            status, _, body = await submit(http, node.base_url, tryon_form(job_id, config={"steps": 20}))
            assert status == 202, body
            (callback,) = await receiver.await_callback(job_id, timeout=600)
            fields = callback.fields
            results.append({k: fields.get(k) for k in ("job_id", "status", "inference_time_ms", "total_time_ms", "error_code")})
            print(json.dumps(results[-1]))
    return results


def scrape_latency(url: str, n: int = 200) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        samples.append(time.perf_counter() - t0)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="worker.device: auto, cpu, cuda, cuda:N [cuda]")
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    on_gpu = args.device != "cpu"
    jsonlog.setup("gpu-check", "gpu_check")  # this process's own log lines (NVML's), as JSON
    checks = Checks()
    nvml, refs = nvml_direct(args.device)

    receiver = CallbackReceiver().start()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        node = CheckedNode(Path(tmp), receiver.url, {"worker": {"device": args.device, "startup_timeout_s": 600}})
        try:
            section(f"node start (worker.device={args.device})")
            t0 = time.perf_counter()
            node.start()
            print(f"ready after {time.perf_counter() - t0:.1f} s")
            section("jobs")
            jobs = asyncio.run(run_jobs(node, receiver, args.jobs))
            checks.check("every job succeeded", all(j["status"] == "succeeded" for j in jobs), len(jobs))

            section("GET /metrics")
            code, text = node.get("/metrics")
            print(text)
            families = {f.name: f for f in text_string_to_metric_families(text)}
            section("GET /gpu/status")
            status = node.gpu_status()
            print(json.dumps(status, indent=2))
            section("GET /health")
            _, health = node.get("/health")
            print(json.dumps(health, indent=2))

            section("worker on the GPU")
            worker_pid = status["worker"]["pid"]
            used = worker_gpu_memory(nvml, refs, worker_pid)
            print(f"worker pid {worker_pid}: {used} bytes of GPU memory (None: not listed by NVML)")

            section("cost of a scrape")
            print(f"GET /metrics, milliseconds: {percentiles(scrape_latency(node.base_url + '/metrics'), 1e3)}")

            succeeded = families["gpu_server_jobs"].samples
            done = [s.value for s in succeeded if s.labels.get("outcome") == "succeeded" and s.name.endswith("_total")]
            checks.check("gpu_server_jobs_total{outcome=succeeded} counts the jobs", done == [float(args.jobs)], done)
            checks.check("worker resident memory reported", families["gpu_server_worker_resident_memory_bytes"].samples[0].value > 0)
            if on_gpu:
                checks.check("nvml_up is 1", families["gpu_server_nvml_up"].samples[0].value == 1, nvml.reason or "")
                gauges = families.get("gpu_server_gpu_memory_used_bytes")
                labels = [s.labels for s in gauges.samples] if gauges else []
                checks.check("one GPU series, labelled gpu/uuid/name", len(labels) == 1, labels)
                checks.check("/gpu/status lists the worker's GPU", len(status["gpus"]) == 1, status["gpus"])
                if labels and status["gpus"]:
                    checks.check("/metrics and /gpu/status name the same GPU",
                                 labels[0]["uuid"] == status["gpus"][0]["uuid"])
                checks.check("/health says gpu_available", health.get("gpu_available") is True, health)
                checks.check("the worker holds GPU memory", bool(used), used)
            else:
                for name in ("nvml_up", "GPU series", "/gpu/status gpus", "gpu_available", "worker GPU memory"):
                    checks.skip(name, "--device cpu")
                checks.check("/gpu/status gpus is [] on the CPU", status["gpus"] == [], status["gpus"])
        except Exception as exc:
            checks.check("the run itself", False, f"{type(exc).__name__}: {exc}\n{node.tail()}")
        finally:
            node.stop()
            receiver.stop()
            nvml.close()
    return 0 if checks.report() else 1


if __name__ == "__main__":
    sys.exit(main())
