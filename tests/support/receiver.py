"""A real HTTP callback receiver (the Asset Service's stand-in) for tests.

An aiohttp server on 127.0.0.1 in a thread of its own, so synchronous and async tests
alike can use it. It records every request and answers from a programmable script.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web


@dataclass
class Callback:
    headers: dict[str, str]
    fields: dict[str, str]
    files: dict[str, tuple[str, str, bytes]]  # name -> (filename, content type, data)
    content_type: str
    answered: int = 200


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class CallbackReceiver:
    def __init__(self) -> None:
        self.calls: list[Callback] = []
        self.script: deque[Reply] = deque()  # replies to give, in order; then 200
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="receiver", daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def start(self) -> CallbackReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/callback", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, str, bytes]] = {}
        # post() reads multipart and urlencoded alike; tests assert which one came.
        for name, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files[name] = (value.filename, value.content_type, value.file.read())
            else:
                fields[name] = value
        with self._cond:
            reply = self.script.popleft() if self.script else Reply()
            self.calls.append(
                Callback(dict(request.headers), fields, files, request.headers.get("Content-Type", ""), reply.status)
            )
            self._cond.notify_all()
        return web.json_response({"ok": reply.status < 300}, status=reply.status, headers=reply.headers)

    def for_job(self, job_id: str) -> list[Callback]:
        with self._cond:
            return [c for c in self.calls if c.fields.get("job_id") == job_id]

    def wait_for(self, job_id: str, count: int = 1, timeout: float = 60.0) -> list[Callback]:
        """Block until `count` callbacks for `job_id` arrived; fail the test after `timeout`."""
        with self._cond:
            ok = self._cond.wait_for(
                lambda: len([c for c in self.calls if c.fields.get("job_id") == job_id]) >= count, timeout
            )
            if not ok:
                raise AssertionError(f"no callback for job {job_id} within {timeout} s; got {self.calls!r}")
            return [c for c in self.calls if c.fields.get("job_id") == job_id]

    async def await_callback(self, job_id: str, count: int = 1, timeout: float = 60.0) -> list[Callback]:
        return await asyncio.to_thread(self.wait_for, job_id, count, timeout)
