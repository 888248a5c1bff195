"""Total deadlines for receiving a request, on top of Sanic's HTTP/1.1 protocol.

Sanic 25.12 measures its REQUEST_TIMEOUT and RESPONSE_TIMEOUT from the last byte received
(`HttpProtocol._time`), so a client that dribbles a byte now and then, or stalls a body
after a few bytes, holds a connection for as long as it likes, and a stalled body ends as
`503 Response Timeout`. Here:

- the head of a request (request line and headers) must be complete within
  `server.header_timeout_s` of its start: the connection's opening for its first request,
  the first byte of the next one on a kept-alive connection;
- its body must be complete within `server.body_timeout_s` of the head's end (also while
  Sanic drains a body the handler did not read);
- past either, the client gets `408 request_timeout` where an answer can still be sent (a
  connection that sent nothing gets none), and the connection is closed.

Between requests, a kept-alive connection may stay idle for Sanic's KEEP_ALIVE_TIMEOUT;
while a response is under way, Sanic's RESPONSE_TIMEOUT applies as before. When the node
stops, `close_connections` ends what is left (a stalled upload must not hold the process
until its body deadline).
"""

from __future__ import annotations

import asyncio
import sys
from time import monotonic
from typing import Collection

from sanic.exceptions import BadRequest, BadURL, RequestTimeout, ServiceUnavailable
from sanic.http import Http, Stage
from sanic.log import error_logger
from sanic.server.protocols.http_protocol import HttpProtocol

from ipc.jsonlog import EventLog

events = EventLog("supervisor.http")
# The deadlines are checked at least this often (a fraction of the shortest one), so a
# deadline that starts between two checks is enforced this late at most.
CHECKS_PER_DEADLINE = 10
MIN_CHECK_S = 0.05
# At stop, requests under way get this long to finish, then this long again to take their
# 503, before their connections are cut.
STOP_GRACE_S = 1.0


class DeadlineHttp(Http):
    """Sanic's HTTP/1.1 cycle, telling its protocol where each request stands."""

    __slots__ = ()

    def init_for_request(self) -> None:
        super().init_for_request()
        self.protocol.request_starting(bool(self.recv_buffer))

    async def http1_request_header(self) -> None:
        try:
            await super().http1_request_header()
        except BadURL:
            # A request target that is not a path (`CONNECT host:443`, `GET x`, `OPTIONS a:b`):
            # Sanic answers errors through a stand-in request made from the same target, which
            # fails again, past its error handling (no answer, a traceback at ERROR). Without
            # the target, the stand-in is `*`, and the client gets its 400.
            self.url = ""
            raise BadRequest("the request target must be a path (origin-form)") from None
        self.protocol.head_received()

    async def http1_response_header(self, data: bytes, end_stream: bool) -> None:
        if self.expecting_continue:
            # A final answer before the body was asked for (refused from its headers: a wrong
            # token, too large, not ready). Sanic would send `100 Continue` before it, keep the
            # connection and read the whole body of a peer it refused: no 100, the body is
            # never read, and the connection closes after the answer.
            self.expecting_continue = False
            self.keep_alive = False
            self.request_body = None
        await super().http1_response_header(data, end_stream)


class DeadlineProtocol(HttpProtocol):
    HTTP_CLASS = DeadlineHttp
    # Sanic's metaclass gives every class empty slots: the new state must be declared.
    __slots__ = ("header_timeout", "body_timeout", "_check_every", "_head_started", "_body_started", "_requests")

    def _setup(self) -> None:
        super()._setup()
        config = self.app.config
        self.header_timeout = float(config.HEADER_TIMEOUT)
        self.body_timeout = float(config.BODY_TIMEOUT)
        self._check_every = max(MIN_CHECK_S, min(self.header_timeout, self.body_timeout) / CHECKS_PER_DEADLINE)
        self._head_started: float | None = None
        self._body_started: float | None = None
        self._requests = 0

    def _setup_connection(self, *args, **kwargs) -> None:
        # A new connection owes the head of its first request from now on.
        self._head_started = monotonic()
        super()._setup_connection(*args, **kwargs)

    def eof_received(self) -> bool:
        """The client half-closed its side. After a whole request: answer it (the default
        closes the transport, which cancels a handler that awaits a thread, /gpu/status's NVML
        read or /metrics' exposition), then close: nothing more can come. Between requests or
        mid-request (a body cut off): close at once."""
        http = self._http
        if http is None:
            return False
        body_pending = http.request_body == "chunked" or bool(http.request_body and http.request_bytes_left)
        if http.stage in (Stage.HANDLER, Stage.RESPONSE):
            whole = not body_pending
        else:  # its head may still wait in the buffer, unparsed
            whole = http.stage in (Stage.IDLE, Stage.REQUEST) and b"\r\n\r\n" in http.recv_buffer and not body_pending
        if not whole:
            return False  # gone mid-request, or between requests: closed (an abort, as ever)
        http.keep_alive = False
        return True

    # --- where the request stands (called by DeadlineHttp) ----------------------------

    def request_starting(self, bytes_waiting: bool) -> None:
        if self._requests:
            # Kept alive: the next head's clock starts with its first byte.
            self._head_started = monotonic() if bytes_waiting else None
        self._requests += 1
        self._body_started = None

    def head_received(self) -> None:
        self._head_started = None
        self._body_started = monotonic()

    def data_received(self, data: bytes) -> None:
        http = self.http
        if (
            self._head_started is None and http is not None and http.stage is Stage.IDLE
            and not getattr(http, "request_body", None)
        ):
            self._head_started = monotonic()
        super().data_received(data)

    # --- enforcing -------------------------------------------------------------------

    def check_timeouts(self) -> None:
        """Replaces Sanic's: its timers restart with every byte; these do not."""
        try:
            if not self._task or self._http is None:
                return
            http = self._http
            now = monotonic()
            # Before its first request, a connection's Http has no per-request state yet.
            if getattr(http, "request_body", None) and self._body_started is not None:
                left = self._body_started + self.body_timeout - now
                if left <= 0:
                    return self._expire("body", self.body_timeout)
            elif http.stage in (Stage.IDLE, Stage.REQUEST) and self._head_started is not None:
                left = self._head_started + self.header_timeout - now
                if left <= 0:
                    return self._expire("headers", self.header_timeout)
            elif http.stage is Stage.IDLE:
                left = self._time + self.keep_alive_timeout - now
                if left <= 0:
                    return self._cancel()  # an idle kept-alive connection: close, no answer
            elif http.stage is Stage.HANDLER and http.upgrade_websocket:
                return
            else:
                left = self._time + self.response_timeout - now
                if left <= 0:
                    http.exception = ServiceUnavailable("Response Timeout")
                    return self._cancel()
            self._callback_check_timeouts = self.loop.call_later(
                min(max(left, MIN_CHECK_S), self._check_every), self.check_timeouts
            )
        except Exception:
            error_logger.exception("protocol.check_timeouts")

    def interrupt(self, exception: Exception) -> None:
        """End the request under way with `exception` as its answer (where one can still
        be sent), then close: as a deadline does, but now."""
        http = self._http
        if not self._task or http is None or http.stage not in (Stage.REQUEST, Stage.HANDLER):
            return
        http.exception = exception
        http.request_body = None
        self._cancel()

    def _expire(self, phase: str, limit_s: float) -> None:
        http = self._http
        request = http.request
        peer = self.transport.get_extra_info("peername") if self.transport else None
        events.info(
            "request_timeout", phase=phase, limit_s=limit_s,
            client=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else None,
            method=request.method if request is not None else None,
            path=request.path if request is not None else None,
            # Of the body: what arrived (Content-Length, or the chunk sizes announced, less what is owed).
            body_bytes=(http.request_bytes or 0) - (http.request_bytes_left or 0) if phase == "body" else None,
        )
        if http.stage is not Stage.IDLE or http.request_body:
            # Sanic answers this exception (a 408 through the app's error handler) where
            # an answer can still be sent, then closes: keep-alive ends with an error.
            http.exception = RequestTimeout(f"the request's {phase} did not arrive within {limit_s:g} s")
        # Nothing more is read: Sanic would otherwise try to drain the rest of the body.
        http.request_body = None
        self._cancel()

    def _cancel(self) -> None:
        if sys.version_info < (3, 14):
            self._task.cancel("Cancel connection task with a timeout")
        else:
            self._task.cancel()


async def close_connections(connections: Collection[HttpProtocol], grace_s: float = STOP_GRACE_S) -> None:
    """At stop, after the listening socket closed (Sanic's own runner does the like; a
    server made with `create_server` is left to do it): idle connections are closed at once;
    requests under way get `grace_s` to finish, then a 503 `not_ready` (a stalled upload, a
    dribbling client), and `grace_s` more; whatever is left is cut."""
    for connection in list(connections):
        connection.close_if_idle()
    await _until_closed(connections, grace_s)
    stopping = ServiceUnavailable("the node is stopping", headers={"Retry-After": "60"})
    for connection in list(connections):
        if isinstance(connection, DeadlineProtocol):
            connection.interrupt(stopping)
    await _until_closed(connections, grace_s)
    for connection in list(connections):
        # Only after the interrupt: an abort that lands while Sanic still reads a head
        # trips over its missing request (an AttributeError logged as an error).
        connection.abort()


async def _until_closed(connections: Collection[HttpProtocol], timeout_s: float) -> None:
    deadline = monotonic() + timeout_s
    while connections and monotonic() < deadline:
        await asyncio.sleep(MIN_CHECK_S)
