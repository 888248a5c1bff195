"""What a recycle costs under load: SIGUSR1 to a node that serves steady traffic.

    python bench/recycle_overlap.py [--device cpu|cuda] [--rounds 3] [--backend reference]

Starts a node (reference backend by default) on 127.0.0.1 with a local callback receiver,
keeps jobs coming (one submitted every 100 ms, `queue.max_pending` 2) while /health is
polled every 20 ms, and sends SIGUSR1 `--rounds` times with `worker.overlap: auto` (margin
0 on the CPU: two workers always fit in RAM; the default 2 GiB on a GPU, where the decision
reads NVML), then once with `never` for comparison. For each round it prints:
- signal -> switch: from the kill() to the supervisor's `worker_switched` line (log time);
- 503s answered by /tryon and /health during the round (should be 0 with overlap);
- for `never`, how long /health was not 200 (first to last 503 seen).
Every accepted job must be delivered. Results also go to bench/results/recycle_overlap.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.node import NodeProcess  # noqa: E402
from tests.support.receiver import CallbackReceiver  # noqa: E402
from tests.support.traffic import Traffic  # noqa: E402

RESULTS = REPO / "bench" / "results"


def log_time(event: dict) -> float:
    return datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()


class BenchNode(NodeProcess):
    def supervisor_events(self, name: str) -> list[dict]:
        return [e for e in self.events(name) if e.get("process") == "supervisor"]

    def wait_event_count(self, name: str, count: int, timeout: float = 600.0) -> list[dict]:
        """Until the supervisor logged `name` `count` times (the worker logs some names too)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.supervisor_events(name)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"fewer than {count} {name} within {timeout} s\n{self.tail()}")


async def one_recycle(http: aiohttp.ClientSession, node: BenchNode, receiver: CallbackReceiver, tag: str) -> dict:
    """One SIGUSR1 under traffic: until a job ran on the new worker; then every job delivered."""
    old_pid = node.worker_pid()
    before = len(node.supervisor_events("worker_ready"))
    async with Traffic(http, node.base_url, tag, job_config={"steps": 40}) as traffic:
        await traffic.until(lambda: len(traffic.accepted) >= 5, what="jobs before the signal")
        sent_at = time.time()
        node.signal(signal.SIGUSR1)
        ready = (await asyncio.to_thread(node.wait_event_count, "worker_ready", before + 1))[-1]
        new_pid = ready["pid"]
        on_new = lambda: any(e["worker_pid"] == new_pid for e in node.events("job_dispatched"))  # noqa: E731
        await traffic.until(on_new, what="a job on the new worker")
    for job_id in traffic.accepted:
        (callback,) = (await receiver.await_callback(job_id))[:1]
        assert callback.fields["status"] == "succeeded", callback.fields
    switched = [e for e in node.events("worker_switched") if e["pid"] == new_pid]
    health_503 = [at for at, route, _ in traffic.not_ready if route == "/health"]
    return {
        "old_pid": old_pid,
        "new_pid": new_pid,
        "signal_to_switch_s": round(log_time(switched[0]) - sent_at, 3) if switched else None,
        "since_asked_s": switched[0]["since_asked_s"] if switched else None,
        "signal_to_ready_s": round(log_time(ready) - sent_at, 3),
        "out_of_service_s": round(health_503[-1] - health_503[0], 3) if health_503 else 0.0,
        "tryon_503": traffic.tryon[503],
        "health_503": len(health_503),
        "accepted": len(traffic.accepted),
        "tryon_429": traffic.tryon[429],
        "delivered": len(traffic.accepted),
    }


async def run(args: argparse.Namespace) -> dict:
    margin = 0 if args.device == "cpu" else 2 * 1024**3
    receiver = CallbackReceiver().start()
    results: dict = {"device": args.device, "backend": args.backend, "rounds": []}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            for mode in ("auto", "never"):
                with tempfile.TemporaryDirectory(prefix="bench-recycle-") as tmp:
                    worker = {"backend": args.backend, "device": args.device, "overlap": mode,
                              "overlap_margin_bytes": margin, "startup_timeout_s": 600}
                    node = BenchNode(Path(tmp), receiver.url, {"worker": worker, "queue": {"max_pending": 2}})
                    node.start(timeout=600)
                    try:
                        for n in range(args.rounds if mode == "auto" else 1):
                            row = await one_recycle(http, node, receiver, f"bench-{mode}-{n}-{os.getpid()}")
                            row["mode"] = mode
                            if mode == "auto":
                                decisions = node.events("worker_overlap_decision")
                                row["decision"] = decisions[-1]["why"] if decisions else None
                            results["rounds"].append(row)
                            print(json.dumps(row), flush=True)
                    finally:
                        node.stop()
    finally:
        receiver.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="worker.device [cpu]")
    parser.add_argument("--backend", default="reference", help="worker.backend [reference]")
    parser.add_argument("--rounds", type=int, default=3, help="SIGUSR1 rounds with overlap [3]")
    results = asyncio.run(run(parser.parse_args()))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recycle_overlap.json").write_text(json.dumps(results, indent=2))
    print()
    print(f"{'mode':6} {'signal->switch':>15} {'signal->ready':>14} {'/tryon 503':>10} {'/health 503':>11} "
          f"{'out of service':>15} {'jobs':>5}")
    for row in results["rounds"]:
        switch = f"{row['signal_to_switch_s']:.2f} s" if row["signal_to_switch_s"] is not None else "-"
        print(f"{row['mode']:6} {switch:>15} {row['signal_to_ready_s']:>12.2f} s {row['tryon_503']:>10} "
              f"{row['health_503']:>11} {row['out_of_service_s']:>13.2f} s {row['accepted']:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
