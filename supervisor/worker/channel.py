"""The supervisor's end of the ZeroMQ socket its workers connect to: one ROUTER socket,
one identity per generation.

Each spawn gets a fresh identity (`register`), so what arrives is routed to the generation
that sent it, and a message from a generation already forgotten (a dead one) is dropped
here, unread. What arrives is handed on as a lifecycle event: `Received`, or `Undecodable`
when it cannot be read. No rule lives here: the lifecycle core decides what a message means.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Callable

import zmq
import zmq.asyncio

from ipc import codec
from ipc.jsonlog import EventLog
from supervisor.worker.lifecycle.events import Received, Undecodable

events = EventLog("supervisor.worker")


class WorkerChannel:
    def __init__(self, endpoint: str, deliver: Callable[[Received | Undecodable], Any]) -> None:
        self.endpoint = endpoint
        self._deliver = deliver
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._decoder = codec.worker_message_decoder()
        self._identity_of: dict[int, bytes] = {}  # generation -> its ZeroMQ identity
        self._generation_of: dict[bytes, int] = {}

    def bind(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        # Sending to a worker that is gone raises instead of dropping the job silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._sock = sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
        self._ctx.term()

    def register(self, gen: int) -> str:
        """A fresh worker id for generation `gen` (its ZeroMQ identity): what arrives from
        it is routed to `gen` from now on."""
        worker_id = f"w{gen}-{secrets.token_hex(4)}"
        self._identity_of[gen] = worker_id.encode()
        self._generation_of[worker_id.encode()] = gen
        return worker_id

    def forget(self, gen: int) -> None:
        """`gen` is gone: nothing more is sent to it, and what it sent late is dropped."""
        identity = self._identity_of.pop(gen, None)
        if identity is not None:
            self._generation_of.pop(identity, None)

    def send(self, gen: int, message: Any, *blobs: bytes) -> str | None:
        """Send without waiting (a worker reads one message at a time, far below the
        high-water mark); the error, or None once it is on its way."""
        identity = self._identity_of.get(gen)
        if identity is None or self._sock is None:
            error = "the worker is gone"
        else:
            frames = [identity, *codec.encode(message, *blobs)]
            sent = self._sock.send_multipart(frames, flags=zmq.DONTWAIT, copy=False)
            if not sent.done():  # pyzmq queued it after all: its outcome is only logged
                sent.add_done_callback(lambda f: _send_failed(gen, message, f.exception()) if _failed(f) else None)
                return None
            if sent.exception() is None:
                return None
            error = str(sent.exception())
        _send_failed(gen, message, error)
        return error

    async def receive_forever(self) -> None:
        """Hand on every message as it arrives, until cancelled."""
        assert self._sock is not None, "bind() first"
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            self._receive(frames)
            del frames  # no image kept alive until the next message

    def _receive(self, frames: list) -> None:
        """(A method of its own so no frame outlives its handling in a local variable.)"""
        gen = self._generation_of.get(frames[0].bytes)
        if gen is None:
            events.debug("worker_message_dropped", identity=frames[0].bytes.decode(errors="replace"))
            return
        try:
            message, blobs = self._decoder.decode(frames[1:])
        except codec.ProtocolError as exc:
            self._deliver(Undecodable(gen, str(exc)))
            return
        self._deliver(Received(gen, message, tuple(blobs)))


def _failed(future: asyncio.Future) -> bool:
    return not future.cancelled() and future.exception() is not None


def _send_failed(gen: int, message: Any, error: object) -> None:
    events.warning("worker_send_failed", generation=gen, message=type(message).__name__, error=str(error))
