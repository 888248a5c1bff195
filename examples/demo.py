"""`make demo`: one try-on job through a real node, end to end, with its timings.

Uses a node already running on the config's port, else starts one (and stops it after);
starts the Asset Service stand-in on the port of `callback.url`; submits the generated
sample images; shows the job's progress while it runs (GET /jobs/{job_id}), and the job
events the stand-in received (`events.url`); waits for the callback; saves the output
image; prints the timings.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from examples import asset_service, samples  # noqa: E402
from supervisor import config as config_module  # noqa: E402

OUTPUT = REPO / "examples" / "output"


def stand_in_failed(url: str, exc: OSError) -> str:
    """Why the stand-in could not listen, and what to do about it."""
    message = f"cannot start the Asset Service stand-in on {url}: {exc.strerror or exc}"
    if exc.errno == errno.EADDRINUSE:
        port = urlsplit(url).port
        message += (
            f"\nSomething already listens on port {port}: most likely a stand-in started by hand "
            f"(.venv/bin/python examples/asset_service.py) or an earlier `make demo` still running. The demo "
            f"needs its own stand-in to see the callback: stop that process (`lsof -i :{port}` or "
            f"`ss -ltnp 'sport = :{port}'` shows it), or set callback.url to a free port, then run "
            "`make demo` again."
        )
    return message


async def node_answers(session: aiohttp.ClientSession, base: str, path: str) -> int | None:
    try:
        async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=2)) as response:
            return response.status
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return None


async def wait_ready(session: aiohttp.ClientSession, base: str, node: subprocess.Popen | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node is not None and node.poll() is not None:
            raise SystemExit(f"the node exited with {node.returncode}; see {OUTPUT / 'node.log'}")
        if await node_answers(session, base, "/health") == 200:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"the node was not ready within {timeout:.0f} s")


async def demo(config_path: Path, steps: int | None, output_format: str | None) -> None:
    cfg = config_module.load(config_path).config
    host = "127.0.0.1" if cfg.server.host in ("0.0.0.0", "::") else cfg.server.host
    base = f"http://{host}:{cfg.server.port}"
    OUTPUT.mkdir(parents=True, exist_ok=True)
    person_path, garment_path = samples.ensure()

    received: asyncio.Future = asyncio.get_running_loop().create_future()
    job_id = f"demo-{int(time.time() * 1000)}"
    job_events: list[asset_service.Event] = []

    def on_callback(callback: asset_service.Received) -> None:
        if callback["fields"].get("job_id") == job_id and not received.done():
            received.set_result((time.perf_counter(), callback))

    def on_event(event: asset_service.Event) -> None:
        if event.get("job_id") == job_id:
            job_events.append(event)

    try:
        runner = await asset_service.start(cfg.callback.url, cfg.callback.token, on_callback, on_event)
    except OSError as exc:
        raise SystemExit(stand_in_failed(cfg.callback.url, exc))
    print(f"Asset Service stand-in on {cfg.callback.url}")

    node = None
    async with aiohttp.ClientSession() as session:
        try:
            if await node_answers(session, base, "/health/live") is None:
                print(f"starting a node on {base} (log: {OUTPUT / 'node.log'})")
                node = subprocess.Popen(
                    [str(Path(sys.executable).parent / "gpu-server"), "serve", "--config", str(config_path)],
                    stdout=(OUTPUT / "node.log").open("wb"), stderr=subprocess.STDOUT, cwd=REPO,
                )
            else:
                print(f"using the node already running on {base}")
            started = time.perf_counter()
            await wait_ready(session, base, node, timeout=300)
            print(f"node ready ({time.perf_counter() - started:.1f} s)")

            options = {k: v for k, v in {"steps": steps, "output_format": output_format, "seed": 42}.items() if v}
            form = aiohttp.FormData()
            for name, value in (("job_id", job_id), ("user_id", "demo-user"), ("session_id", "demo-session"),
                                ("provider", "qwen"), ("config", __import__("json").dumps(options))):
                form.add_field(name, value)
            form.add_field("person_image", person_path.read_bytes(), filename=person_path.name, content_type="image/jpeg")
            form.add_field("garment_image", garment_path.read_bytes(), filename=garment_path.name, content_type="image/png")

            t0 = time.perf_counter()
            async with session.post(f"{base}/tryon", data=form, headers={"X-Internal-Auth": cfg.auth.tokens[0]}) as resp:
                t_answer = time.perf_counter()
                body = await resp.json()
            if resp.status != 202:
                raise SystemExit(f"POST /tryon answered {resp.status}: {body}")
            print(f"POST /tryon -> 202 {body}")
            headers = {"X-Internal-Auth": cfg.auth.tokens[0]}
            await show_progress(session, f"{base}/jobs/{job_id}", headers, received)
            t_callback, callback = await asyncio.wait_for(received, timeout=300)
        finally:
            if node is not None:
                node.send_signal(signal.SIGTERM)
                node.wait(120)
            await runner.cleanup()

    fields = callback["fields"]
    if job_events:
        print("job events received by the stand-in (events.url):")
        for event in job_events:
            print(f"  {asset_service.describe_event(event)}")
    if fields.get("status") != "succeeded":
        raise SystemExit(f"the job failed: {fields.get('error_code')}: {fields.get('error_message')}")
    suffix = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(callback["content_type"], "bin")
    out_path = OUTPUT / f"{job_id}.{suffix}"
    out_path.write_bytes(callback["image"])
    print()
    print(f"  POST -> 202                 {(t_answer - t0) * 1000:8.1f} ms   (client side)")
    print(f"  POST -> callback received   {(t_callback - t0) * 1000:8.1f} ms   (client side)")
    print(f"  queue (node)                {int(fields['queue_time_ms']):8d} ms")
    print(f"  inference (node)            {int(fields['inference_time_ms']):8d} ms   model {fields['model_version']}")
    print(f"  total (node)                {int(fields['total_time_ms']):8d} ms")
    print(f"  output image                {out_path} ({len(callback['image'])} bytes)")


async def show_progress(session: aiohttp.ClientSession, url: str, headers: dict, callback: asyncio.Future) -> None:
    """A line per new position of the job, read from GET /jobs/{job_id}, until it has ended
    (on a terminal, one line rewritten in place)."""
    shown = None
    in_place = sys.stdout.isatty()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        async with session.get(url, headers=headers) as response:
            job = await response.json() if response.status == 200 else {}
        progress, state = job.get("progress"), job.get("state")
        line = f"  {state}" + (f": step {progress['step']}/{progress['total']}" if progress else "")
        if state and line != shown:
            print(("\r" + line.ljust(40)) if in_place else line, end="" if in_place else "\n", flush=True)
            shown = line
        if state not in (None, "queued", "running") or (state is None and callback.done()):
            break
        await asyncio.sleep(0.2)
    if in_place and shown is not None:
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(config_module.resolve_path(None)))
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--output-format", choices=("png", "jpeg", "webp"), default=None)
    args = parser.parse_args()
    asyncio.run(demo(Path(args.config), args.steps, args.output_format))


if __name__ == "__main__":
    main()
