"""What one job of the Qwen try-on graph costs on the CPU, the shipped graph against the one
before the per-job work that cannot change the output was taken out: one table.

    python bench/qwen_graph_work.py [--jobs 3] [--seed 7]

Starts two nodes with the test backend (tests/support/qwen.py: the random-weight files at the
CI shrink, counted engine calls): one on conf/workflows/qwen_image_edit_tryon.json, one on
tests/support/workflows/qwen_image_edit_tryon_unpruned.json (the negative prompt fully encoded
with both images, the start latent VAE-encoded from the person). After each node's warm-up,
runs --jobs jobs on each, alternately (A, B, A, B: a machine shared with other work slows
both alike), with the same images and seed per pair. Prints per graph: nodes executed per job
(not served from the cache), engine calls per job (text encoder, vision tower, VAE encode and
decode, diffusion model), the median graph time and the median seconds of each node; and
whether each pair's output images are the same pixels. Nothing is written outside a
temporary folder (the weights: once, into .venv/qwen-random-weights/). Exit status 1 when a
pair differs or a job fails.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import numpy  # noqa: E402

from tests.support import images  # noqa: E402
from tests.support.client import submit, tryon_form  # noqa: E402
from tests.support.comfyui import WORKFLOWS, vendored_root  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.qwen import ensure_test_weights, output_image, qwen_settings  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

GRAPHS = {
    "shipped": REPO / "conf" / "workflows" / "qwen_image_edit_tryon.json",
    "unpruned": WORKFLOWS / "qwen_image_edit_tryon_unpruned.json",
}
CALLS = ("text_encoder", "vision_tower", "vae_encode", "vae_decode", "diffusion_model")
PERSON, GARMENT = images.person(384, 512), images.garment()


def start(name: str, workflow: Path, work: Path, receiver: CallbackReceiver, root: Path, models: Path) -> NodeProcess:
    folder = work / name
    folder.mkdir()
    print(f"starting the {name} node (warm-up included)", flush=True)
    return NodeProcess(folder, receiver.url, {
        "worker": {"backend": "tests.support.qwen:QwenTestBackend", "startup_timeout_s": 900,
                   "inference_timeout_s": 900},
        "model": {"custom": qwen_settings(root, models, workflow=str(workflow))},
    }).start(timeout=900)


async def job(http, node: NodeProcess, receiver: CallbackReceiver, job_id: str, seed: int) -> dict:
    status, _, body = await submit(http, node.base_url, tryon_form(
        job_id, person_image=PERSON, garment_image=GARMENT, config={"seed": seed}))
    if status != 202:
        raise RuntimeError(f"{job_id}: {status} {body}")
    (callback,) = await receiver.await_callback(job_id, timeout=900)
    if callback.fields["status"] != "succeeded":
        raise RuntimeError(f"{job_id}: {callback.fields}")
    executed = node.wait_event("comfyui_graph_executed", job_id=job_id)
    calls = node.wait_event("qwen_test_job_calls", job_id=job_id)["calls"]
    return {"pixels": numpy.asarray(output_image(callback)), "executed": executed, "calls": calls}


def table(results: dict[str, list[dict]]) -> list[tuple[str, ...]]:
    names = list(results)
    rows = [("per job", *names)]
    nodes = {n: [len(r["executed"]["node_seconds"]) for r in results[n]] for n in names}
    rows.append(("nodes executed (not cached)", *(f"{statistics.median(nodes[n]):.0f}" for n in names)))
    for call in CALLS:
        rows.append((f"{call} calls", *(f"{statistics.median(r['calls'][call] for r in results[n]):.0f}" for n in names)))
    rows.append(("graph time, median (s)", *(
        f"{statistics.median(r['executed']['execution_s'] for r in results[n]):.2f}" for n in names)))
    every = sorted({node for n in names for r in results[n] for node in r["executed"]["node_seconds"]},
                   key=lambda node: (not node.isdigit(), int(node) if node.isdigit() else 0, node))
    for node in every:
        cells = []
        for n in names:
            times = [r["executed"]["node_seconds"][node] for r in results[n] if node in r["executed"]["node_seconds"]]
            cells.append(f"{statistics.median(times):.3f}" if times else "-")
        rows.append((f"  node {node} (s)", *cells))
    return rows


async def run(args) -> int:
    root = vendored_root()
    if root is None:
        print("the engine is not installed: run `make test` once", file=sys.stderr)
        return 2
    models = ensure_test_weights()
    receiver = CallbackReceiver().start()
    nodes: dict[str, NodeProcess] = {}
    with tempfile.TemporaryDirectory(prefix="qwen-graph-work-") as work:
        try:
            for name, workflow in GRAPHS.items():
                nodes[name] = start(name, workflow, Path(work), receiver, root, models)
            results: dict[str, list[dict]] = {name: [] for name in GRAPHS}
            same = True
            async with aiohttp.ClientSession() as http:
                for n in range(args.jobs):
                    for name, node in nodes.items():
                        results[name].append(await job(http, node, receiver, f"{name}-{n}", args.seed + n))
                        print(f"{name}-{n}: {results[name][-1]['executed']['execution_s']:.2f} s", flush=True)
                    pair = [results[name][-1]["pixels"] for name in GRAPHS]
                    same &= bool(numpy.array_equal(*pair))
        finally:
            for node in nodes.values():
                node.stop()
            receiver.stop()
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)))
    print(f"same pixels for the same seed in every pair: {'yes' if same else 'NO'}")
    return 0 if same else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3, help="jobs per graph [3]")
    parser.add_argument("--seed", type=int, default=7)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
