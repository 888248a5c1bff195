"""Delivering a finished job's result to the Asset Service (aiohttp), with retries.

The multipart body is built once per job, so every attempt sends the same bytes.
Retried on connection errors, timeouts, 408, 429 and 5xx with exponential backoff and
jitter (honouring Retry-After); any other 4xx is final.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from typing import Awaitable, Callable, NamedTuple

import aiohttp

from ipc.jsonlog import EventLog
from supervisor.config import CallbackConfig
from supervisor.jobs import CallbackState, Job
from supervisor.metrics import Metrics

EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
RETRY_AFTER_CAP_S = 300.0
RETRYABLE_STATUSES = frozenset({408, 429})
events = EventLog("supervisor.callback")


class Body(NamedTuple):
    data: bytes
    content_type: str


async def build_body(job: Job, node_id: str) -> Body:
    """The callback form of the contract: always multipart, the image only on success."""
    result = job.result
    assert result is not None
    timings = job.timings_ms()
    # Multipart also without a file (aiohttp would fall back to urlencoded).
    form = aiohttp.FormData(default_to_multipart=True)
    fields = {
        "job_id": job.job_id,
        "user_id": job.user_id,
        "session_id": job.session_id,
        "provider": job.provider,
        "node_id": node_id,
        "model_version": job.model_version or "",
        "status": job.state.value,
        "inference_time_ms": str(timings["inference"] or 0),
        "queue_time_ms": str(timings["queue"] or 0),
        "total_time_ms": str(timings["total"] or 0),
    }
    if not result.ok:
        fields["error_code"] = result.error_code or ""
        fields["error_message"] = result.error_message or ""
    for name, value in fields.items():
        form.add_field(name, value)
    if result.ok and result.image is not None:
        content_type = result.content_type or "application/octet-stream"
        form.add_field(
            "output_image",
            result.image,
            filename=f"{job.job_id}.{EXTENSIONS.get(content_type, 'bin')}",
            content_type=content_type,
        )
    writer = form()
    return Body(await writer.as_bytes(), writer.content_type)


def backoff_s(attempt: int, base_s: float, jitter: float) -> float:
    """Delay after failed attempt number `attempt` (1-based): base doubling, x[0.5, 1.5)."""
    return base_s * 2.0 ** (attempt - 1) * (0.5 + jitter)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date), capped at 300 s."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


class CallbackSender:
    def __init__(
        self,
        config: CallbackConfig,
        node_id: str,
        metrics: Metrics,
        *,
        backoff_base_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.metrics = metrics
        self.backoff_base_s = backoff_base_s
        self._sleep = sleep
        self._jitter = jitter
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            headers={"X-Internal-Auth": self.config.token},
        )

    def submit(self, job: Job) -> None:
        task = asyncio.get_running_loop().create_task(self.deliver(job), name=f"callback-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait_s: float, hurry: asyncio.Future | None = None, hurry_wait_s: float = 0.0) -> None:
        """Give deliveries under way up to `wait_s` to finish, then stop them. Once `hurry`
        is done, what is left of the wait shrinks to `hurry_wait_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        hurried = False
        pending = set(self._tasks)
        while pending:
            if hurry is not None and hurry.done() and not hurried:
                hurried = True
                deadline = min(deadline, loop.time() + hurry_wait_s)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            waiters = pending | ({hurry} if hurry is not None and not hurried else set())
            await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            pending = {task for task in pending if not task.done()}
        for task in pending:
            task.cancel()
            job_id = task.get_name().removeprefix("callback-")
            events.error("callback_failed", job_id=job_id, final=True, reason="node stopped first")
        if pending:
            await asyncio.wait(pending)
        if self._session is not None:
            await self._session.close()

    async def deliver(self, job: Job) -> None:
        body = await build_body(job, self.node_id)
        attempts = 1 + self.config.max_retries
        for attempt in range(1, attempts + 1):
            job.callback_state = CallbackState.DELIVERING
            job.callback_attempts += 1
            status, retry_after, problem = await self._attempt(job, body, attempt)
            if status is not None and 200 <= status < 300:
                job.callback_state = CallbackState.DELIVERED
                self.metrics.callback_attempts.labels("success").inc()
                events.info("callback_succeeded", job_id=job.job_id, attempt=attempt, status=status)
                break
            if status is not None and not is_retryable(status):
                job.callback_state = CallbackState.UNDELIVERABLE
                self.metrics.callback_attempts.labels("undeliverable").inc()
                events.error(
                    "callback_failed", job_id=job.job_id, attempt=attempt, status=status,
                    final=True, reason=problem,
                )
                break
            if attempt == attempts:
                job.callback_state = CallbackState.UNDELIVERABLE
                self.metrics.callback_attempts.labels("failure").inc()
                events.error(
                    "callback_failed", job_id=job.job_id, attempt=attempt, status=status,
                    final=True, reason=f"{problem}; retries spent",
                )
                break
            delay = backoff_s(attempt, self.backoff_base_s, self._jitter())
            if retry_after is not None:
                delay = max(delay, retry_after)
            job.callback_state = CallbackState.RETRYING
            self.metrics.callback_attempts.labels("retry").inc()
            events.warning(
                "callback_failed", job_id=job.job_id, attempt=attempt, status=status,
                final=False, reason=problem, retry_in_s=round(delay, 3),
            )
            await self._sleep(delay)
        job.release_output()
        events.info("cleanup_done", job_id=job.job_id, callback_state=job.callback_state.value)

    async def _attempt(self, job: Job, body: Body, attempt: int) -> tuple[int | None, float | None, str]:
        """One POST: (status or None, Retry-After seconds, what went wrong)."""
        assert self._session is not None, "start() first"
        events.info("callback_attempt", job_id=job.job_id, attempt=attempt, url=self.config.url)
        started = time.perf_counter()
        try:
            async with self._session.post(
                self.config.url, data=body.data, headers={"Content-Type": body.content_type}
            ) as response:
                await response.read()
                status = response.status
                retry_after = None
                if status in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                job.callback_last_status = status
                return status, retry_after, f"HTTP {status}"
        except asyncio.TimeoutError:
            return None, None, f"timed out after {self.config.timeout_s} s"
        except aiohttp.ClientError as exc:
            return None, None, f"{type(exc).__name__}: {exc}"
        finally:
            self.metrics.callback_duration.observe(time.perf_counter() - started)
