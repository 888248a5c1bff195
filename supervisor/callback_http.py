"""One HTTP attempt at delivering a callback: the POST, and what its answer means."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import aiohttp

from ipc.jsonlog import EventLog
from supervisor import __version__
from supervisor.retry_policy import is_retryable, parse_retry_after

# Who is calling, on every attempt (not aiohttp's own "Python/3.x aiohttp/3.x").
USER_AGENT = f"gpu-server/{__version__}"
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
        """A 4xx other than 408/429: the Asset Service will never take this result."""
        return self.status is not None and not self.delivered and not is_retryable(self.status)


async def post(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str], timeout_s: float, job_id: str
) -> Attempt:
    """POST `body` once; never raises (any failure is a failed attempt, not a lost task)."""
    headers = {**headers, "User-Agent": USER_AGENT}
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            await response.read()
            code = response.status
            retry_after = None
            if code in (429, 503):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            return Attempt(code, retry_after, f"HTTP {code}")
    except asyncio.TimeoutError:
        return Attempt(None, None, f"timed out after {timeout_s} s")
    except aiohttp.ClientError as exc:
        return Attempt(None, None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # anything else aiohttp raises
        events.exception("callback_attempt_error", job_id=job_id)
        return Attempt(None, None, f"{type(exc).__name__}: {exc}")
