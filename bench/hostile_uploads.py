"""The event loop's lag while hostile uploads arrive: how long `/health/live` waits.

A real node (reference backend) takes, one after another, POSTs whose two images are 19 MiB
JPEGs or PNGs built to make a header parser walk them in Python: fill bytes, junk, tiny
segments, Photoshop blocks (within every limit), repeated scans, tiny PNG chunks. Meanwhile
`/health/live` is polled every 50 ms on a connection of its own; the worst and the median
answer time are the loop's lag. Prints the figures (and saves them to
bench/results/hostile_uploads.json). Listens on 127.0.0.1 only and stops by itself.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import images  # noqa: E402
from tests.support.client import submit, tryon_form  # noqa: E402
from tests.support.node import NodeProcess  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402

RESULTS = REPO / "bench" / "results"
MIB = 1024 * 1024
ROUNDS = 3  # POSTs of each kind
POLL_S = 0.05


def hostile_files() -> dict[str, bytes]:
    size = 19 * MIB
    per_segment = 65_000
    return {
        "jpeg 19 MiB of fill bytes": images.jpeg_with_fill(size),
        "jpeg 19 MiB of junk": images.jpeg_with_junk(size),
        "jpeg 19 MiB of tiny segments": images.jpeg_with_segments(size // 5),
        "jpeg 19 MiB of Photoshop blocks (within the limits)": images.jpeg_with_photoshop_blocks(size // per_segment),
        "jpeg 100,000 scans": images.jpeg_with_scans(100_000),
        "png 19 MiB of tiny chunks": images.png_with_chunks(size // 15),
    }


async def poll(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
        lags.append(time.perf_counter() - started)
        await asyncio.sleep(POLL_S)


async def main() -> None:
    results = {}
    receiver = CallbackReceiver().start()
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"server": {"max_body_bytes": 48 * MIB}, "images": {"max_bytes": 20 * MIB}}
        node = NodeProcess(Path(tmp), receiver.url, overrides).start()
        try:
            async with aiohttp.ClientSession() as poller, aiohttp.ClientSession() as sender:
                for name, data in hostile_files().items():
                    lags: list[float] = []
                    stop = asyncio.Event()
                    probe = asyncio.create_task(poll(poller, node.base_url + "/health/live", stop, lags))
                    statuses, answers = [], []
                    for i in range(ROUNDS):
                        form = tryon_form(f"hostile-{len(results)}-{i}", person_image=data, garment_image=data,
                                          config={"steps": 1})
                        started = time.perf_counter()
                        status, _, _ = await submit(sender, node.base_url, form)
                        answers.append(time.perf_counter() - started)
                        statuses.append(status)
                    stop.set()
                    await probe
                    results[name] = {
                        "statuses": sorted(set(statuses)),
                        "answer_ms_max": round(max(answers) * 1000, 1),
                        "health_live_ms_max": round(max(lags) * 1000, 1),
                        "health_live_ms_p50": round(statistics.median(lags) * 1000, 1),
                        "probes": len(lags),
                    }
                    print(f"{name:55s} -> {results[name]}", flush=True)
        finally:
            node.stop()
            receiver.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hostile_uploads.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
