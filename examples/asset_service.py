"""A local stand-in for the Asset Service: receives callbacks, keeps the last ones, and
prints the job events an orchestrator would get.

`.venv/bin/python examples/asset_service.py --port 8090` runs it alone on http://127.0.0.1:8090/callback
(`--url URL` for another host or path); `make demo` starts its own. It checks the callback
token when given one and answers 200; the received images are saved to --out
(examples/output/ by default), and each saved file's path is printed. Job events
(`events.url`: job.started, job.progress) are taken on /events of the same host and port
(http://127.0.0.1:8090/events, where conf/config.yaml sends them) and printed, one line each.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from aiohttp import web

DEFAULT_URL = "http://127.0.0.1:8090/callback"  # callback.url of conf/config.yaml
EVENTS_PATH = "/events"  # events.url of conf/config.yaml: the same host and port
Received = dict  # {"fields": {...}, "image": bytes | None, "content_type": str | None}
Event = dict  # the JSON body: {"type", "job_id", "user_id", "session_id", "node_id", "step", "total", "at"}


def make_app(
    path: str,
    token: str | None,
    on_callback: Callable[[Received], None],
    on_event: Callable[[Event], None] | None = None,
) -> web.Application:
    async def callback(request: web.Request) -> web.Response:
        if token is not None and request.headers.get("X-Internal-Auth") != token:
            return web.json_response({"error": "unauthorized"}, status=401)
        fields: dict[str, str] = {}
        image = content_type = None
        reader = await request.multipart()
        async for part in reader:
            if part.name == "output_image":
                image, content_type = bytes(await part.read()), part.headers.get("Content-Type")
            else:
                fields[part.name] = await part.text()
        on_callback({"fields": fields, "image": image, "content_type": content_type})
        return web.json_response({"status": "stored", "job_id": fields.get("job_id")})

    async def event(request: web.Request) -> web.Response:
        # The node sends events with events.token, which defaults to the callback's token.
        if token is not None and request.headers.get("X-Internal-Auth") != token:
            return web.json_response({"error": "unauthorized"}, status=401)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        if on_event is not None:
            on_event(body)
        return web.json_response({"status": "received"})

    app = web.Application(client_max_size=128 * 1024 * 1024)
    app.router.add_post(path, callback)
    if path != EVENTS_PATH:
        app.router.add_post(EVENTS_PATH, event)
    return app


def describe_event(event: Event) -> str:
    """One line for an event: `job.progress demo-1 step 3/8 at ...`."""
    where = f" step {event.get('step')}/{event.get('total')}" if event.get("type") == "job.progress" else ""
    return f"{event.get('type')} {event.get('job_id')}{where} at {event.get('at')}"


async def start(
    url: str,
    token: str | None,
    on_callback: Callable[[Received], None],
    on_event: Callable[[Event], None] | None = None,
) -> web.AppRunner:
    """Listen on the host, port and path of `url` (the node's callback.url), and on /events."""
    parts = urlsplit(url)
    runner = web.AppRunner(make_app(parts.path or "/", token, on_callback, on_event), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname or "127.0.0.1", parts.port or 80).start()
    return runner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="listen on http://127.0.0.1:PORT/callback")
    where.add_argument("--url", help=f"listen on this URL's host, port and path (default: {DEFAULT_URL})")
    parser.add_argument("--token", default=None, help="expected X-Internal-Auth (default: accept any)")
    parser.add_argument("--out", default="examples/output", help="where received images go")
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}/callback" if args.port is not None else args.url or DEFAULT_URL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save(received: Received) -> None:
        fields = received["fields"]
        print({k: v for k, v in fields.items()}, flush=True)
        if received["image"] is not None:
            suffix = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}.get(received["content_type"], "bin")
            saved = out / f"{fields.get('job_id', 'job')}.{suffix}"
            saved.write_bytes(received["image"])
            # Where the result is: the callback's fields above say which job it was.
            print(f"saved {saved.resolve()}", flush=True)

    async def serve() -> None:
        await start(url, args.token, save, lambda event: print(f"event: {describe_event(event)}", flush=True))
        parts = urlsplit(url)
        events_url = f"{parts.scheme}://{parts.netloc}{EVENTS_PATH}"
        print(f"Asset Service stand-in listening on {url} (job events on {events_url})", flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
