"""How much of the GPU's time goes to the model: a saturated node, its duty cycle.

A node (real supervisor, real worker) runs bench/duty_backend.py: real prepare and finish
stages on a 12 MP phone photo (3024x4032 JPEG person, ~1 MP garment, PNG output at the
photo's size) around a model stage that holds the "GPU" for `--model-s`. A client keeps the
node saturated: `--clients` loops, each resubmitting at once on a 202 and retrying a 429
after 50 ms. After `--warmup` jobs, for `--jobs` more it prints:
- jobs/s against 1/model-s (the limit: the GPU never idle);
- the duty cycle: model-stage time / wall time (the share of the time the GPU works);
- the slot time outside the model stage, per job (what the GPU waits for);
- POST -> callback p50 and p99;
- the peak resident memory of the supervisor and of the worker (the kernel's VmHWM).
With `--max-pending` (the queue's capacity) 0 or 1. Listens on 127.0.0.1 only and stops by
itself. Runs against the current checkout; for a before/after, run the same file on the
commit before (it falls back to one `run` where the worker has no stages).

    python bench/gpu_duty.py --model-s 2 --jobs 20 --max-pending 1
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.node import TOKEN, NodeProcess  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

RESULTS = REPO / "bench" / "results"


def photo(width: int, height: int, quality: int) -> bytes:
    """A photo-like JPEG: noise over a gradient (compresses like a phone photo)."""
    noise = Image.effect_noise((width // 4, height // 4), 48).resize((width, height), Image.Resampling.BICUBIC)
    gradient = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (noise, gradient, Image.blend(noise, gradient, 0.5)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


class StampedReceiver(CallbackReceiver):
    """The callback receiver, noting when each job's callback arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: dict[str, float] = {}

    async def _handle(self, request):
        response = await super()._handle(request)
        self.arrived.setdefault(self.calls[-1].fields.get("job_id", ""), time.perf_counter())
        return response


def vm_hwm(pid: int) -> int:
    """The kernel's high-water mark of the process's resident memory, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def saturate(node: NodeProcess, receiver: StampedReceiver, person: bytes, garment: bytes, total: int,
                   clients: int) -> dict[str, float]:
    """Keep the node full until `total` jobs are accepted; when each was POSTed."""
    posted: dict[str, float] = {}
    counter = iter(range(total))

    async def client(session: aiohttp.ClientSession) -> None:
        for index in counter:
            job_id = f"duty-{index}"
            while True:
                form = aiohttp.FormData()
                for name, value in (("job_id", job_id), ("user_id", "u"), ("session_id", "s"), ("provider", "qwen")):
                    form.add_field(name, value)
                form.add_field("person_image", person, filename="p.jpg", content_type="image/jpeg")
                form.add_field("garment_image", garment, filename="g.jpg", content_type="image/jpeg")
                started = time.perf_counter()
                async with session.post(f"{node.base_url}/tryon", data=form, headers={"X-Internal-Auth": TOKEN}) as r:
                    await r.read()
                    if r.status == 202:
                        posted[job_id] = started
                        break
                    assert r.status == 429, r.status
                await asyncio.sleep(0.05)

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return posted


async def run(args) -> dict:
    person, garment = photo(3024, 4032, 88), photo(1024, 1024, 90)
    receiver = StampedReceiver().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            node = NodeProcess(Path(tmp), receiver.url, {
                "queue": {"max_pending": args.max_pending},
                "worker": {"backend": "bench.duty_backend:DutyBackend", "inference_timeout_s": 600},
                "model": {"custom": {"model_s": args.model_s}},
                "server": {"max_body_bytes": 64 * 1024 * 1024},
            }).start(timeout=300)
            try:
                total = args.warmup + args.jobs
                posted = await saturate(node, receiver, person, garment, total, args.clients)
                await asyncio.gather(*(receiver.await_callback(job_id, timeout=600) for job_id in posted))
                # The steady state: the callbacks after the warm-up's, in the order they came;
                # N jobs after the first of them took N intervals (one model stage each at best).
                order = sorted(posted, key=receiver.arrived.__getitem__)
                measured = order[args.warmup - 1:]
                wall = receiver.arrived[measured[-1]] - receiver.arrived[measured[0]]
                jobs = len(measured) - 1
                per_job = wall / jobs
                latencies = [receiver.arrived[j] - posted[j] for j in measured[1:]]
                results = {
                    "max_pending": args.max_pending,
                    "model_s": args.model_s,
                    "jobs": jobs,
                    "jobs_per_s": round(1 / per_job, 3),
                    "limit_jobs_per_s": round(1 / args.model_s, 3),
                    "duty_cycle": round(min(1.0, args.model_s / per_job), 3),
                    "slot_outside_model_ms_per_job": round(max(0.0, per_job - args.model_s) * 1000, 1),
                    "post_to_callback_p50_s": round(statistics.median(latencies), 3),
                    "post_to_callback_p99_s": round(quantile(latencies, 0.99), 3),
                    "supervisor_peak_rss_mib": round(vm_hwm(node.pid) / 2**20, 1),
                    "worker_peak_rss_mib": round(vm_hwm(node.worker_pid()) / 2**20, 1),
                    "person_jpeg_bytes": len(person),
                }
            finally:
                node.stop()
    finally:
        receiver.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-s", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--max-pending", type=int, nargs="*", default=[1, 0])
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    everything = []
    for max_pending in args.max_pending:
        one = asyncio.run(run(argparse.Namespace(**{**vars(args), "max_pending": max_pending})))
        print(json.dumps(one), flush=True)
        everything.append(one)
    (RESULTS / "gpu_duty.json").write_text(json.dumps(everything, indent=2) + "\n")


if __name__ == "__main__":
    main()
