"""What a /metrics scrape costs, and what the NVML collector adds to it.

Prints JSON:
- `exposition_us`: the node's registry rendered in-process (after some traffic), without the
  GPU collector, with it over a fake NVML of one GPU (the Python side of the collector), and
  with it over the real NVML of this machine; and the GPU collector alone, both ways;
- `nvml_read_us`: one read of GPU 0 through the real NVML, where a driver answers;
- `http_get_metrics_ms`: GET /metrics against a real node (supervisor + worker), one at a time.

`python bench/metrics_latency.py` from the repository root, with the project installed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from prometheus_client import generate_latest  # noqa: E402

from supervisor.metrics.gpu_collector import GpuCollector  # noqa: E402
from supervisor.metrics.registry import Metrics  # noqa: E402
from supervisor.gpu.nvml import Nvml  # noqa: E402
from supervisor.metrics.worker_collector import WorkerProcessCollector  # noqa: E402
from tests.support.fake_nvml import FakeGpu, FakeNvml  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

N_INPROCESS = 2000
N_HTTP = 500


def summary(samples: list[float], scale: float) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50": round(statistics.median(ordered) * scale, 1),
        "p99": round(ordered[int(len(ordered) * 0.99) - 1] * scale, 1),
        "n": len(ordered),
    }


def timed(fn, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def node_like_metrics() -> Metrics:
    """A registry as a node has it after some traffic: every route, status and outcome seen."""
    metrics = Metrics()
    metrics.bind_state(lambda: False, lambda: 0, os.getpid, lambda: True)
    metrics.registry.register(WorkerProcessCollector(os.getpid))
    metrics.set_build_info("0.1.0", "abc1234", "reference", "reference-1")
    for route in ("/tryon", "/gpu/status", "/jobs/{job_id}", "/health", "/health/live", "/version", "/metrics"):
        for status in (200, 202, 401, 409, 422, 429, 503):
            metrics.observe_request(route, status, 0.003)
    for seconds in (0.2, 1.5, 7.0):
        metrics.job_total.observe(seconds)
        metrics.job_inference.observe(seconds)
        metrics.job_queue.observe(seconds / 10)
    return metrics


def exposition_costs() -> dict:
    results = {}
    plain = node_like_metrics()
    results["without_gpu_collector"] = summary(timed(lambda: generate_latest(plain.registry), N_INPROCESS), 1e6)

    fake = Nvml(FakeNvml([FakeGpu()]))
    fake.start()
    with_fake = node_like_metrics()
    with_fake.registry.register(GpuCollector(fake, lambda: [0]))
    results["with_gpu_collector_fake_nvml_1_gpu"] = summary(
        timed(lambda: generate_latest(with_fake.registry), N_INPROCESS), 1e6
    )

    # The collector alone: what it adds to every scrape.
    alone = GpuCollector(fake, lambda: [0])
    results["gpu_collector_alone_fake_nvml_1_gpu"] = summary(timed(lambda: list(alone.collect()), N_INPROCESS), 1e6)

    real = Nvml()
    real.start()
    with_real = node_like_metrics()
    with_real.registry.register(GpuCollector(real, lambda: [0]))
    results[f"with_gpu_collector_real_nvml_up_{int(real.up)}"] = summary(
        timed(lambda: generate_latest(with_real.registry), N_INPROCESS), 1e6
    )
    results[f"gpu_collector_alone_real_nvml_up_{int(real.up)}"] = summary(
        timed(lambda: list(GpuCollector(real, lambda: [0]).collect()), N_INPROCESS), 1e6
    )
    nvml_read = summary(timed(lambda: real.read([0]), N_INPROCESS), 1e6) if real.up else None
    real.close()
    return {"exposition_us": results, "nvml_read_us": nvml_read or f"no driver ({real.reason})"}


def http_costs() -> dict:
    receiver = CallbackReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            node = NodeProcess(Path(tmp), receiver.url).start(timeout=300)
            try:
                url = node.base_url + "/metrics"

                def get() -> None:
                    with urllib.request.urlopen(url, timeout=10) as response:
                        response.read()

                timed(get, 20)  # warm up
                return {"http_get_metrics_ms": summary(timed(get, N_HTTP), 1e3)}
            finally:
                node.stop()
    finally:
        receiver.stop()


def main() -> None:
    print(json.dumps({**exposition_costs(), **http_costs()}, indent=2))


if __name__ == "__main__":
    main()
