"""`make bench`: what a node costs, measured on this machine against real processes.

Prints (and saves to bench/results/latest.json):
- POST /tryon -> 202 with two ~1.5 MB JPEGs, one request at a time, node idle;
- the same request against a bare Sanic app that only receives it, and one that also
  parses it with Sanic's own form parser (the floor);
- POST -> callback received for a small reference job (steps=1);
- POST -> 429 while the GPU is busy (the refusal path reads and checks the whole body);
- GET /health and a /metrics scrape;
- node start -> ready, and worker SIGKILL -> ready again, beside a bare `import torch`.
Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.node import TOKEN, NodeProcess, free_port  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

RESULTS = REPO / "bench" / "results"
N_ACCEPT = 200
N_BUSY = 200
N_SMALL = 500


def jpeg_of_about(n_bytes: int, seed: int) -> bytes:
    """A photo-like JPEG (noise over gradients) of roughly n_bytes."""
    import random

    rng = random.Random(seed)
    side = 600
    while True:
        image = Image.effect_noise((side, side), 40).convert("RGB")
        image = Image.merge("RGB", [ch.point(lambda v, k=rng.randint(0, 80): min(255, v + k)) for ch in image.split()])
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95)
        if buffer.tell() >= n_bytes:
            return buffer.getvalue()
        side = int(side * 1.15)


PERSON = jpeg_of_about(1_500_000, 1)
GARMENT = jpeg_of_about(1_500_000, 2)


def form(job_id: str, config: dict | None = None, person: bytes = PERSON) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in (("job_id", job_id), ("user_id", "bench"), ("session_id", "bench"), ("provider", "qwen")):
        data.add_field(name, value)
    if config:
        data.add_field("config", json.dumps(config))
    data.add_field("person_image", person, filename="person.jpg", content_type="image/jpeg")
    data.add_field("garment_image", GARMENT, filename="garment.jpg", content_type="image/jpeg")
    return data


def summary(samples_s: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples_s)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(0.90 * (len(ms) - 1))], 2),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


async def timed_post(session, url, data, headers=None) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.post(url, data=data, headers=headers or {}) as response:
        await response.read()
    return time.perf_counter() - started, response.status


async def bench_floor() -> dict[str, dict]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "floor_server.py"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            results = {}
            for route in ("/tryon", "/tryon-form"):
                samples = []
                for i in range(N_ACCEPT + 20):
                    elapsed, status = await timed_post(session, f"http://127.0.0.1:{port}{route}", form(f"f{i}"))
                    assert status == 202
                    if i >= 20:
                        samples.append(elapsed)
                results[route] = summary(samples)
            return results
    finally:
        proc.terminate()
        proc.wait(10)


async def bench_node(workdir: Path, receiver: CallbackReceiver) -> dict:
    # healthy_after_s is short so that each SIGKILL below is a single crash after a
    # healthy period (restarted at once), not a crash loop (backed off).
    node = NodeProcess(workdir, receiver.url, {"worker": {"healthy_after_s": 0.5}})
    started = time.perf_counter()
    node.start(timeout=300)
    results: dict = {"start_to_ready_s": round(time.perf_counter() - started, 3)}
    url = f"{node.base_url}/tryon"
    auth = {"X-Internal-Auth": TOKEN}
    try:
        async with aiohttp.ClientSession() as session:
            accept, end_to_end = [], []
            for i in range(N_ACCEPT + 20):
                job_id = f"b{i}"
                t0 = time.perf_counter()
                elapsed, status = await timed_post(session, url, form(job_id, {"steps": 1}), auth)
                assert status == 202, status
                await receiver.await_callback(job_id)
                total = time.perf_counter() - t0
                if i >= 20:
                    accept.append(elapsed)
                    end_to_end.append(total)
            results["post_to_202"] = summary(accept)
            results["post_to_callback_steps1"] = summary(end_to_end)

            # The busy path: a long job holds the GPU while refused requests come in.
            long_person = Image.new("RGB", (1024, 1024), (90, 120, 150))
            buffer = io.BytesIO()
            long_person.save(buffer, "PNG")
            elapsed, status = await timed_post(session, url, form("busy-holder", {"steps": 100}, buffer.getvalue()), auth)
            assert status == 202
            busy = []
            for i in range(N_BUSY):
                elapsed, status = await timed_post(session, url, form(f"busy-{i}"), auth)
                if status == 429:
                    busy.append(elapsed)
            results["post_to_429_busy"] = summary(busy)
            await receiver.await_callback("busy-holder")

            for path, key in (("/health", "get_health"), ("/metrics", "get_metrics")):
                samples = []
                for _ in range(N_SMALL):
                    t0 = time.perf_counter()
                    async with session.get(node.base_url + path) as response:
                        await response.read()
                    samples.append(time.perf_counter() - t0)
                results[key] = summary(samples)

            # Recovery: SIGKILL the worker, time until /health says ready again.
            recoveries = []
            for _ in range(5):
                await asyncio.sleep(0.6)  # let the worker count as healthy
                pid = node.worker_pid()
                t0 = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                node.wait_event("worker_exited", pid=pid)
                node.wait_ready(120)
                recoveries.append(time.perf_counter() - t0)
            results["worker_sigkill_to_ready_s"] = [round(r, 3) for r in recoveries]
    finally:
        node.stop()
    return results


def bare_torch_import_s() -> list[float]:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        times.append(round(time.perf_counter() - t0, 3))
    return times


async def main() -> None:
    receiver = CallbackReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            node = await bench_node(Path(tmp), receiver)
        floor = await bench_floor()
    finally:
        receiver.stop()
    results = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "image_bytes": [len(PERSON), len(GARMENT)],
        "node": node,
        "floor_bare_sanic_post_to_202": floor,
        "bare_python_import_torch_s": bare_torch_import_s(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))

    print(f"two JPEGs of {len(PERSON)} and {len(GARMENT)} bytes, {os.cpu_count()} CPUs\n")
    print(f"{'measure':44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'n':>5}")
    rows = [
        ("POST /tryon -> 202 (gpu-server)", node["post_to_202"]),
        ("POST -> 202 (bare Sanic, body only)", floor["/tryon"]),
        ("POST -> 202 (bare Sanic + its form parser)", floor["/tryon-form"]),
        ("POST -> 429 while busy", node["post_to_429_busy"]),
        ("POST -> callback (reference, steps=1)", node["post_to_callback_steps1"]),
        ("GET /health", node["get_health"]),
        ("GET /metrics", node["get_metrics"]),
    ]
    for name, s in rows:
        print(f"{name:44} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} {s['p99_ms']:8.2f} {s['n']:5d}")
    print()
    print(f"node start -> ready               {node['start_to_ready_s']} s")
    print(f"worker SIGKILL -> ready again     {node['worker_sigkill_to_ready_s']} s")
    print(f"bare `python -c 'import torch'`   {results['bare_python_import_torch_s']} s")
    print(f"\nsaved to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    asyncio.run(main())
