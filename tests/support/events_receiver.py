"""A real HTTP receiver of job events (`events.url`) for tests: an aiohttp server on
127.0.0.1 in a thread of its own, that records every event and answers as told: 200, a
status of the test's choosing, or never (it holds the request until it is stopped)."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any, Callable

from aiohttp import web


@dataclass
class Event:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


class EventsReceiver:
    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.events: list[Event] = []
        self.hanging = 0  # requests being held right now
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="events-receiver", daemon=True)
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def start(self) -> EventsReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._release is not None:
            self._loop.call_soon_threadsafe(self._release.set)
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/events", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        with self._cond:
            self.events.append(Event(dict(request.headers), raw, json.loads(raw)))
            if self.hang:
                self.hanging += 1
            self._cond.notify_all()
        if self.hang:
            assert self._release is not None
            await self._release.wait()
        return web.json_response({"ok": self.status < 300}, status=self.status)

    def for_job(self, job_id: str) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e.body.get("job_id") == job_id]

    def wait_until(self, check: Callable[[EventsReceiver], bool], timeout: float = 60.0) -> None:
        """Until `check(self)` holds (evaluated whenever an event arrives)."""
        with self._cond:
            if not self._cond.wait_for(lambda: check(self), timeout):
                raise AssertionError(f"events receiver: condition not met within {timeout} s; got {self.events!r}")
