"""A real HTTP callback receiver (the Asset Service's stand-in) for tests.

An aiohttp server on 127.0.0.1 in a thread of its own, so synchronous and async tests
alike can use it. It records every request and answers from a programmable script.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qsl

from aiohttp import web
from multipart import MultipartParser, parse_options_header

from tests.support.threaded_server import ThreadedServer


@dataclass
class Callback:
    headers: dict[str, str]
    fields: dict[str, str]
    files: dict[str, tuple[str, str, bytes]]  # name -> (filename, content type, data)
    content_type: str
    raw: bytes
    answered: int = 200


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    # When set, the answer's body is this many bytes, streamed (a hostile Asset Service).
    body_bytes: int = 0


@dataclass
class Stray:
    """A request to anything but POST /callback (a followed redirect, say)."""

    method: str
    path: str
    headers: dict[str, str]


class CallbackReceiver(ThreadedServer):
    name = "receiver"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Callback] = []
        self.stray: list[Stray] = []
        # Bytes of streamed answer bodies (Reply.body_bytes) the client actually took.
        self.streamed_bytes = 0
        self.script: deque[Reply] = deque()  # replies to give, in order; then 200
        # Per job id: a function choosing the reply (before the script), e.g. an outage.
        self.answer_for: dict[str, Callable[[], Reply]] = {}
        self._cond = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/callback", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._stray)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        fields, files = _parse_form(raw, request.headers.get("Content-Type", ""))
        with self._cond:
            rule = self.answer_for.get(fields.get("job_id", ""))
            reply = rule() if rule is not None else self.script.popleft() if self.script else Reply()
            self.calls.append(
                Callback(dict(request.headers), fields, files, request.headers.get("Content-Type", ""), raw, reply.status)
            )
            self._cond.notify_all()
        if reply.body_bytes:
            return await self._stream(request, reply)
        return web.json_response({"ok": reply.status < 300}, status=reply.status, headers=reply.headers)

    async def _stream(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        response.content_length = reply.body_bytes
        await response.prepare(request)
        chunk = b"\0" * (1024 * 1024)
        left = reply.body_bytes
        try:
            while left > 0:
                piece = chunk[: min(left, len(chunk))]
                await response.write(piece)
                left -= len(piece)
                self.streamed_bytes += len(piece)
        except (ConnectionError, RuntimeError):
            pass  # the client stopped reading and closed: what it should do
        return response

    async def _stray(self, request: web.Request) -> web.Response:
        with self._cond:
            self.stray.append(Stray(request.method, request.path, dict(request.headers)))
            self._cond.notify_all()
        return web.json_response({"ok": True})

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


def _parse_form(raw: bytes, content_type: str) -> tuple[dict[str, str], dict[str, tuple[str, str, bytes]]]:
    """Multipart or urlencoded alike (tests assert which one came, from content_type)."""
    mime, options = parse_options_header(content_type)
    if mime != "multipart/form-data":
        return dict(parse_qsl(raw.decode(errors="replace"))), {}
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, str, bytes]] = {}
    for part in MultipartParser(io.BytesIO(raw), options["boundary"]):
        if part.filename is not None:
            files[part.name] = (part.filename, part.content_type, part.raw)
        else:
            fields[part.name] = part.value
    return fields, files
