"""The supervisor's end of the worker socket (supervisor/worker/channel.py), over a real
ZeroMQ socket pair: a DEALER per generation plays the worker."""

from __future__ import annotations

import asyncio
import logging

import pytest
import zmq
import zmq.asyncio

from ipc import codec
from ipc.messages import Heartbeat, Hello, JobSucceeded, RunJob, Shutdown
from ipc.transport import endpoint_in, make_runtime_dir, remove_runtime_dir
from supervisor.worker.lifecycle.events import Received, Undecodable
from supervisor.worker.channel import WorkerChannel
from tests.support.waiting import until


class Channel:
    """A bound channel, what it handed on, and workers connected to it."""

    def __init__(self, endpoint: str) -> None:
        self.delivered: asyncio.Queue = asyncio.Queue()
        self.channel = WorkerChannel(endpoint, self.delivered.put_nowait)
        self.channel.bind()
        self.reader = asyncio.ensure_future(self.channel.receive_forever())
        self.ctx = zmq.asyncio.Context()
        self.workers: list[zmq.asyncio.Socket] = []

    def worker(self, worker_id: str) -> zmq.asyncio.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, worker_id.encode())
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.channel.endpoint)
        self.workers.append(sock)
        return sock

    async def next(self):
        return await asyncio.wait_for(self.delivered.get(), 10)

    async def close(self) -> None:
        self.reader.cancel()
        await asyncio.gather(self.reader, return_exceptions=True)
        for sock in self.workers:
            sock.close(linger=0)
        self.ctx.term()
        self.channel.close()


@pytest.fixture
async def channel():
    runtime = make_runtime_dir()
    made = Channel(endpoint_in(runtime))
    yield made
    await made.close()
    remove_runtime_dir(runtime)


async def test_each_generation_gets_its_own_identity_and_its_messages_are_routed_to_it(channel):
    ids = channel.channel.register(1), channel.channel.register(2)
    assert ids[0].startswith("w1-") and ids[1].startswith("w2-") and ids[0] != ids[1]
    first, second = channel.worker(ids[0]), channel.worker(ids[1])
    await second.send_multipart(codec.encode(Heartbeat()))
    assert await channel.next() == Received(2, Heartbeat(), ())
    hello = Hello(protocol=1, worker_id=ids[0], pid=42)
    await first.send_multipart(codec.encode(hello))
    assert await channel.next() == Received(1, hello, ())


async def test_a_result_comes_with_its_image_frames(channel):
    worker = channel.worker(channel.channel.register(1))
    result = JobSucceeded(job_id="j1", content_type="image/png", width=1, height=1, inference_ms=5.0)
    await worker.send_multipart(codec.encode(result, b"png"))
    received = await channel.next()
    assert received.gen == 1 and received.message == result
    assert [codec.frame_bytes(blob) for blob in received.blobs] == [b"png"]


async def test_what_a_forgotten_or_unknown_identity_sends_is_dropped_unread(channel, caplog):
    caplog.set_level(logging.DEBUG, logger="supervisor.worker")
    gone = channel.worker(channel.channel.register(1))
    stranger = channel.worker("w9-stranger")
    channel.channel.forget(1)
    await gone.send_multipart(codec.encode(Heartbeat()))
    await stranger.send_multipart([b"not even a message"])
    await until(lambda: len(dropped(caplog)) == 2)
    assert sorted(dropped(caplog)) == [channel.workers[0].getsockopt(zmq.IDENTITY).decode(), "w9-stranger"]
    assert channel.delivered.empty()
    live = channel.worker(channel.channel.register(2))
    await live.send_multipart(codec.encode(Heartbeat()))
    assert await channel.next() == Received(2, Heartbeat(), ())  # and it reads on


def dropped(caplog) -> list[str]:
    return [r.fields["identity"] for r in caplog.records if getattr(r, "event", None) == "worker_message_dropped"]



async def test_a_message_that_cannot_be_read_is_handed_on_as_undecodable(channel):
    worker = channel.worker(channel.channel.register(3))
    await worker.send_multipart([b"\xff not msgpack"])
    event = await channel.next()
    assert isinstance(event, Undecodable) and event.gen == 3 and event.error


async def test_send_reaches_the_generation_by_its_identity_and_a_gone_one_is_an_error(channel):
    worker = channel.worker(channel.channel.register(1))
    await worker.send_multipart(codec.encode(Heartbeat()))  # the ROUTER learns the peer once it speaks
    await channel.next()
    assert channel.channel.send(1, Shutdown()) is None
    frames = await asyncio.wait_for(worker.recv_multipart(), 10)
    assert codec.supervisor_message_decoder().decode(frames) == (Shutdown(), [])

    assert channel.channel.send(7, Shutdown()) == "the worker is gone"  # never registered
    channel.channel.register(2)  # registered, but no such peer is connected
    error = channel.channel.send(2, RunJob(job_id="j", seed=1, steps=1, output_format="png"), b"p", b"g")
    assert error is not None and error != "the worker is gone"  # ROUTER_MANDATORY: refused, not dropped
