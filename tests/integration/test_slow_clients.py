"""Slow and stalled clients are cut off by total deadlines (server.header_timeout_s,
server.body_timeout_s), and a normal client is served meanwhile.

The deadlines are short here (3 s and 4 s) so the test takes seconds. Nothing is timed
against a threshold: the 202 must come before any slow connection is closed, and each slow
connection must be closed no earlier than its deadline and with a generous margin after.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest

from tests.support.client import submit, tryon_form
from tests.support.node import TOKEN, NodeProcess

HEADER_S = 3.0
BODY_S = 4.0
# Turns "never closed" into a failure; the node closes within a fraction of a second.
GRACE_S = 15.0
IDLE_CONNECTIONS = 50


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    overrides = {"server": {"header_timeout_s": HEADER_S, "body_timeout_s": BODY_S}}
    proc = NodeProcess(tmp_path_factory.mktemp("slow-clients"), receiver.url, overrides).start()
    yield proc
    assert proc.stop() == 0, proc.tail()


class Slow:
    """One slow connection: when its deadline started (on our side, so never later than
    the node's clock), what it got back, and when the node closed it."""

    def __init__(self, name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, since: float) -> None:
        self.name, self.reader, self.writer = name, reader, writer
        self.deadline_from = since
        self.answer = b""
        self.closed_at: float | None = None

    async def wait_closed(self) -> None:
        """Read until the node closes the connection (EOF or reset)."""
        try:
            while chunk := await self.reader.read(65536):
                self.answer += chunk
        except ConnectionError:
            pass
        self.closed_at = time.monotonic()

    def json_answer(self) -> tuple[int, dict]:
        head, _, body = self.answer.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)


async def open_slow(node, name: str) -> Slow:
    since = time.monotonic()  # before the connection exists: never later than the node's clock
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    return Slow(name, reader, writer, since)


async def dribble(slow: Slow) -> None:
    """A header byte every 0.2 s, never finishing: an inactivity timer never fires."""
    slow.writer.write(b"GET /health HTTP/1.1\r\nHost: n\r\nX-Pad: ")
    try:
        while slow.closed_at is None:
            slow.writer.write(b"a")
            await slow.writer.drain()
            await asyncio.sleep(0.2)
    except ConnectionError:
        pass


async def test_slow_clients_are_cut_off_by_their_deadlines_while_a_normal_client_is_served(node, http):
    idle = [await open_slow(node, f"idle-{i}") for i in range(IDLE_CONNECTIONS)]
    dribbler = await open_slow(node, "dribbler")
    stalled = await open_slow(node, "stalled-body")
    stalled.deadline_from = time.monotonic()  # the body's clock starts once the head is in
    stalled.writer.write(
        f"POST /tryon HTTP/1.1\r\nHost: n\r\nX-Internal-Auth: {TOKEN}\r\n"
        "Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"--abc\r\n" + b"x" * 1000  # then nothing: a body shorter than its Content-Length
    )
    await stalled.writer.drain()
    slow = [*idle, dribbler, stalled]
    closers = [asyncio.ensure_future(s.wait_closed()) for s in slow]
    dribbling = asyncio.ensure_future(dribble(dribbler))

    status, _, body = await submit(http, node.base_url, tryon_form("beside-slow-clients", config={"steps": 1}))
    assert status == 202, body
    still_open = [s.name for s in slow if s.closed_at is None]
    assert len(still_open) == len(slow), "a slow connection was closed before the normal client's 202"

    done, _ = await asyncio.wait(closers, timeout=BODY_S + GRACE_S)
    dribbling.cancel()
    never_closed = [s.name for s in slow if s.closed_at is None]
    assert not never_closed, f"still open {BODY_S + GRACE_S} s later: {never_closed[:5]}"

    for s in idle:
        assert s.answer == b"", s.answer  # nothing was asked, nothing is answered
        assert s.closed_at - s.deadline_from >= HEADER_S
    assert dribbler.closed_at - dribbler.deadline_from >= HEADER_S
    status, body = dribbler.json_answer()
    assert status == 408 and body["error"] == "request_timeout", body
    assert stalled.closed_at - stalled.deadline_from >= BODY_S
    status, body = stalled.json_answer()
    assert status == 408 and body["error"] == "request_timeout", body

    timeouts = node.events("request_timeout")
    assert sum(1 for e in timeouts if e["phase"] == "headers") == IDLE_CONNECTIONS + 1
    (body_timeout,) = [e for e in timeouts if e["phase"] == "body"]
    assert body_timeout["path"] == "/tryon" and body_timeout["body_bytes"] == 1007
    # The stalled upload is a 408 of /tryon, never a 503 (nor counted as one).
    statuses = node.request_statuses("/tryon")
    assert "408" in statuses and not [s for s in statuses if s.startswith("5")], statuses
    for s in slow:
        s.writer.close()


async def test_a_kept_alive_connection_idle_past_the_header_deadline_still_serves_its_next_request(node):
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        request = b"GET /health/live HTTP/1.1\r\nHost: n\r\n\r\n"
        writer.write(request)
        assert (await read_response(reader))[0] == 200
        # Idle between requests is the keep-alive's business; the next head's clock starts
        # with its first byte.
        await asyncio.sleep(HEADER_S + 1.0)
        writer.write(request)
        assert (await read_response(reader))[0] == 200
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GRACE_S)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    return int(head.split()[1]), await asyncio.wait_for(reader.readexactly(length), GRACE_S)



def test_slow_clients_do_not_hold_the_node_when_it_stops(tmp_path, receiver):
    """Deadlines of a minute; SIGTERM: the node exits long before them, cutting the
    stalled upload, the dribbler and the idle connection."""
    node = NodeProcess(tmp_path, receiver.url, {"server": {"header_timeout_s": 60, "body_timeout_s": 60}}).start()

    async def hold_and_stop() -> list[Slow]:
        slow = [await open_slow(node, name) for name in ("idle", "dribbler", "stalled-body")]
        idle, dribbler, stalled = slow
        dribbler.writer.write(b"GET /health HTTP/1.1\r\nHost: n\r\nX-Pad: aaa")
        stalled.writer.write(
            f"POST /tryon HTTP/1.1\r\nHost: n\r\nX-Internal-Auth: {TOKEN}\r\n"
            "Content-Type: multipart/form-data; boundary=abc\r\nContent-Length: 100000\r\n\r\n--abc\r\n".encode()
        )
        await asyncio.gather(dribbler.writer.drain(), stalled.writer.drain())
        await asyncio.to_thread(node.wait_event, "request_received", 30.0, content_length=100000)
        node.signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(node.wait_exit, 30)
        assert exit_code == 0, node.tail()
        await asyncio.wait_for(asyncio.gather(*(s.wait_closed() for s in slow)), 10)
        return slow

    idle, dribbler, stalled = asyncio.run(hold_and_stop())
    assert idle.answer == b""
    for s in (dribbler, stalled):  # an answer where one can be sent: the node is stopping
        status, body = s.json_answer()
        assert status == 503 and body["error"] == "not_ready", (s.name, body)
    assert not [e for e in node.events() if e["level"] == "ERROR"]
