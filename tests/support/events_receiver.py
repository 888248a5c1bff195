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

from tests.support.threaded_server import ThreadedServer


@dataclass
class Event:
    headers: dict[str, str]
    raw: bytes
    body: dict[str, Any]


class EventsReceiver(ThreadedServer):
    name = "events-receiver"

    def __init__(self, status: int = 200, hang: bool = False) -> None:
        super().__init__()
        self.status = status
        self.hang = hang
        self.events: list[Event] = []
        self.hanging = 0  # requests being held right now
        self._cond = threading.Condition()
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/events"

    def stop(self) -> None:
        if self._release is not None:  # held requests are answered, so the cleanup ends
            self._loop.call_soon_threadsafe(self._release.set)
        super().stop(cleanup_timeout=30)

    def make_app(self) -> web.Application:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/events", self._handle)
        return app

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
