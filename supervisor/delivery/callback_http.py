"""One HTTP attempt at delivering a callback: the POST, and what its answer means.

Redirects are never followed (a 3xx is final, like a 4xx): the result and `X-Internal-Auth`
only ever go to `callback.url`. Of the answer only the status counts; its body is read up to
ANSWER_READ_BYTES and discarded, so a huge answer costs the node no memory.
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import aiohttp

from ipc.jsonlog import EventLog
from supervisor import __version__
from supervisor.delivery.retry_policy import is_retryable, parse_retry_after

# Who is calling, on every attempt (not aiohttp's own "Python/3.x aiohttp/3.x").
USER_AGENT = f"gpu-server/{__version__}"
# Of an answer's body, at most this much is read (and discarded).
ANSWER_READ_BYTES = 64 * 1024
events = EventLog("supervisor.callback")


class Attempt(NamedTuple):
    status: int | None  # None: no answer (connection error, timeout)
    retry_after: float | None
    problem: str

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def final(self) -> bool:
        """A 3xx (never followed) or a 4xx other than 408/429: never delivered by retrying."""
        return self.status is not None and not self.delivered and not is_retryable(self.status)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float, job_id: str
) -> Attempt:
    """POST `body` once; never raises (any failure is a failed attempt, not a lost task)."""
    headers = {**headers, "User-Agent": USER_AGENT}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False) as response:
            await read_at_most(response, ANSWER_READ_BYTES)
            code = response.status
            retry_after = None
            if code in (429, 503):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return Attempt(code, retry_after, _problem(code))
    except asyncio.TimeoutError:
        return Attempt(None, None, f"timed out after {timeout_s} s")
    except aiohttp.ClientError as exc:
        return Attempt(None, None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # anything else aiohttp raises
        events.exception("callback_attempt_error", job_id=job_id)
        return Attempt(None, None, f"{type(exc).__name__}: {exc}")


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> int:
    """Read and discard at most `limit` bytes of an answer (callbacks and job events); a
    longer one is left unread and its connection closed rather than reused. The bytes read."""
    read = 0
    while read < limit:
        chunk = await response.content.read(limit - read)
        if not chunk:
            return read
        read += len(chunk)
    if not response.content.at_eof():
        response.close()
    return read


def _problem(code: int) -> str:
    if 300 <= code < 400:
        return f"HTTP {code}: a redirect, never followed (callback.url must be the final address)"
    return f"HTTP {code}"
