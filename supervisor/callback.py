"""Delivering a finished job's result to the Asset Service (aiohttp), at least once.

The multipart body is built once per job and written to the spool before the first
attempt, so every attempt, also after a restart, sends the same bytes with the same
`webhook-id`. Retried on connection errors, timeouts, 408, 429 and 5xx: first
`callback.max_retries` quick retries (from 1 s doubling, with jitter), then from the
spool (see redelivery.py), honouring Retry-After; any other 4xx is final (`undeliverable`,
dead-lettered).
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from typing import Awaitable, Callable, NamedTuple

import aiohttp

from ipc.jsonlog import EventLog
from supervisor import signing
from supervisor.config import CallbackConfig, SpoolConfig
from supervisor.jobs import CallbackState, Job
from supervisor.metrics import Metrics
from supervisor.redelivery import Delivery, Redelivery, SpooledJob, spool_delay
from supervisor.spool import Spool, SpoolCorrupt, SpoolRecord

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


def spool_record(job: Job, body: Body, now: float) -> SpoolRecord:
    result = job.result
    assert result is not None
    return SpoolRecord(
        job_id=job.job_id,
        webhook_id=job.webhook_id,
        content_type=body.content_type,
        spooled_at=now,
        state=job.state.value,
        created_at=job.accepted_at,
        timings_ms=job.timings_ms(),
        error_code=result.error_code,
        error_message=result.error_message,
    )


class CallbackSender:
    def __init__(
        self,
        config: CallbackConfig,
        node_id: str,
        metrics: Metrics,
        spool: Spool,
        spool_config: SpoolConfig = SpoolConfig(),
        *,
        backoff_base_s: float = 1.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.metrics = metrics
        self.spool = spool
        self.spool_config = spool_config
        self.backoff_base_s = backoff_base_s
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._key = signing.parse_secret(config.signing_secret) if config.signing_secret else None
        self.redelivery = Redelivery(self._redeliver, clock=clock)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._redelivery_task: asyncio.Task | None = None
        # Results not yet safe on disk: the node waits for them before it stops.
        self._unspooled = 0
        self._all_spooled = asyncio.Event()
        self._all_spooled.set()

    def reconfigure(self, config: CallbackConfig, spool_config: SpoolConfig) -> None:
        """A reloaded config (SIGHUP): the next attempt uses its URL, token, timeout,
        signing secret and spool backoff."""
        self.config = config
        self.spool_config = spool_config
        self._key = signing.parse_secret(config.signing_secret) if config.signing_secret else None

    async def start(self) -> None:
        """Open the HTTP session and start retrying whatever the spool holds (after
        `Spool.open()`: a result of the previous run is due at once)."""
        self._session = aiohttp.ClientSession()
        for name, record in list(self.spool.records()):
            self.redelivery.schedule(Delivery(record, SpooledJob(record), name=name), 0.0)
        if len(self.spool):
            events.info("spool_loaded", pending=len(self.spool))
        self._redelivery_task = asyncio.get_running_loop().create_task(self.redelivery.run(), name="redelivery")

    def pending_job(self, job_id: str) -> Job | SpooledJob | None:
        """A job whose result waits for redelivery: the job store may have forgotten it,
        or it ran before this process started (then known from its spool entry)."""
        delivery = self.redelivery.get(job_id)
        return delivery.status if delivery is not None else None  # type: ignore[return-value]

    def submit(self, job: Job) -> None:
        self._unspooled += 1
        self._all_spooled.clear()
        task = asyncio.get_running_loop().create_task(self.deliver(job), name=f"callback-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait_s: float, hurry: asyncio.Future | None = None, hurry_wait_s: float = 0.0) -> None:
        """Give deliveries under way up to `wait_s` to finish, then stop them (their results
        stay in the spool). Once `hurry` is done, what is left of the wait shrinks to
        `hurry_wait_s`. Whatever happens, every result is on disk before this returns."""
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
        # Building a body and writing it takes milliseconds: never cut short.
        await self._all_spooled.wait()
        for task in pending:
            task.cancel()
            job_id = task.get_name().removeprefix("callback-")
            events.error("callback_failed", job_id=job_id, final=False, reason="node stopped first; kept in the spool")
        if pending:
            await asyncio.wait(pending)
        if self._redelivery_task is not None:
            self._redelivery_task.cancel()
            await asyncio.wait({self._redelivery_task})
        if self._session is not None:
            await self._session.close()

    # --- one job's delivery ------------------------------------------------------------

    async def deliver(self, job: Job) -> None:
        try:
            delivery = await self._spool(job)
        finally:
            self._unspooled -= 1
            if self._unspooled == 0:
                self._all_spooled.set()
        attempts = 1 + self.config.max_retries
        for attempt in range(1, attempts + 1):
            assert delivery.body is not None
            outcome = await self._attempt(delivery, delivery.body, attempt)
            if outcome.delivered or outcome.final:
                self._settle(delivery, outcome)
                return
            if attempt == attempts:
                break
            delay = backoff_s(attempt, self.backoff_base_s, self._jitter())
            if outcome.retry_after is not None:
                delay = max(delay, outcome.retry_after)
            # Never longer than the spool's own pace (max_retries may be up to 20).
            delay = min(delay, max(self.spool_config.retry_max_s, outcome.retry_after or 0.0))
            self._will_retry(delivery, outcome, attempt, delay)
            await self._sleep(delay)
        delay = max(self.spool_config.retry_initial_s, outcome.retry_after or 0.0)
        self._will_retry(delivery, outcome, attempts, delay, "quick retries spent, ")
        if delivery.name is not None:
            delivery.body = None  # read back from the spool when due
        self.redelivery.schedule(delivery, delay)

    async def _spool(self, job: Job) -> Delivery:
        """Build the body and store it durably before the first attempt; the job's
        image goes from memory (the body holds it now)."""
        body = await build_body(job, self.node_id)
        job.release_output()
        record = spool_record(job, body, self._clock())
        delivery = Delivery(record, job, body=body.data)
        started = time.perf_counter()
        try:
            delivery.name = await asyncio.to_thread(self.spool.write_file, record, body.data)
            self.spool.add(delivery.name, record)
        except OSError as exc:
            # The disk failed us mid-run: still deliver, from memory, while this process lives.
            events.error("spool_write_failed", job_id=job.job_id, error=str(exc), dir=str(self.spool.root))
        else:
            events.info(
                "spool_written", job_id=job.job_id, file=delivery.name, bytes=len(body.data),
                write_ms=round((time.perf_counter() - started) * 1000, 2),
            )
        events.info("cleanup_done", job_id=job.job_id)
        return delivery

    async def _redeliver(self, delivery: Delivery) -> float | None:
        """One attempt from the spool; seconds until the next, or None when done with it."""
        record = delivery.record
        if self._clock() >= record.spooled_at + self.spool_config.max_age_s:
            self._expire(delivery)
            return None
        body = delivery.body
        if body is None:
            assert delivery.name is not None
            try:
                body = await asyncio.to_thread(self.spool.read, delivery.name)
            except FileNotFoundError:  # deleted by hand: the operator gave it up
                events.warning("spool_entry_gone", job_id=record.job_id, file=delivery.name)
                self.spool.remove(delivery.name)
                return None
            except SpoolCorrupt as exc:
                self.spool.quarantine(delivery.name, str(exc))
                return None
            except OSError as exc:  # the disk, for now: try again later, as for a failed attempt
                events.error("spool_read_failed", job_id=record.job_id, file=delivery.name, error=str(exc))
                return self.spool_config.retry_max_s
        attempt = delivery.status.callback_attempts + 1
        outcome = await self._attempt(delivery, body, attempt, from_spool=True)
        del body
        if outcome.delivered or outcome.final:
            self._settle(delivery, outcome)
            return None
        delivery.spool_failures += 1
        cfg = self.spool_config
        delay = max(spool_delay(delivery.spool_failures, cfg.retry_initial_s, cfg.retry_max_s), outcome.retry_after or 0.0)
        left = record.spooled_at + cfg.max_age_s - self._clock()
        if delay >= left:
            # No attempt fits before the age limit: this was the last one. The entry stays
            # until the limit passes (nothing goes before), then is removed.
            delivery.status.callback_state = CallbackState.RETRYING
            self.metrics.callback_attempts.labels("failure").inc()
            events.error(
                "callback_failed", job_id=record.job_id, attempt=attempt, status=outcome.status, final=True,
                reason=f"{outcome.problem}; the age limit passes before another attempt", from_spool=True,
            )
            return max(left, 0.0)
        self._will_retry(delivery, outcome, attempt, delay, "from the spool, ")
        return delay

    def _will_retry(self, delivery: Delivery, outcome: Attempt, attempt: int, delay: float, how: str = "") -> None:
        delivery.status.callback_state = CallbackState.RETRYING
        self.metrics.callback_attempts.labels("retry").inc()
        events.warning(
            "callback_failed", job_id=delivery.record.job_id, attempt=attempt, status=outcome.status,
            final=False, reason=f"{how}{outcome.problem}" if how else outcome.problem, retry_in_s=round(delay, 3),
            spooled=delivery.name is not None,
        )

    def _settle(self, delivery: Delivery, outcome: Attempt) -> None:
        """A 2xx (remove from the spool) or a final 4xx (to the dead letters)."""
        record, status = delivery.record, delivery.status
        if outcome.delivered:
            status.callback_state = CallbackState.DELIVERED
            self.metrics.callback_attempts.labels("success").inc()
            if delivery.name is not None:
                self.spool.remove(delivery.name)
            events.info(
                "callback_succeeded", job_id=record.job_id, attempt=status.callback_attempts,
                status=outcome.status, webhook_id=record.webhook_id,
            )
        else:
            status.callback_state = CallbackState.UNDELIVERABLE
            self.metrics.callback_attempts.labels("undeliverable").inc()
            if delivery.name is not None:
                self.spool.dead_letter(delivery.name)
            events.error(
                "callback_failed", job_id=record.job_id, attempt=status.callback_attempts, status=outcome.status,
                final=True, reason=outcome.problem, undeliverable=True,
                dead_letter=str(self.spool.dead / delivery.name) if delivery.name else None,
            )
        delivery.body = None

    def _expire(self, delivery: Delivery) -> None:
        record = delivery.record
        delivery.status.callback_state = CallbackState.UNDELIVERABLE
        self.metrics.spool_expired.inc()
        if delivery.name is not None:
            self.spool.remove(delivery.name)
        events.error(
            "spool_entry_expired", job_id=record.job_id, webhook_id=record.webhook_id,
            age_s=round(self._clock() - record.spooled_at), max_age_s=self.spool_config.max_age_s,
            attempts=delivery.status.callback_attempts,
        )

    async def _attempt(self, delivery: Delivery, body: bytes, attempt: int, from_spool: bool = False) -> Attempt:
        """One POST, signed for this attempt."""
        assert self._session is not None, "start() first"
        record, status = delivery.record, delivery.status
        status.callback_state = CallbackState.DELIVERING
        status.callback_attempts += 1
        events.info(
            "callback_attempt", job_id=record.job_id, attempt=attempt, url=self.config.url,
            webhook_id=record.webhook_id, from_spool=from_spool,
        )
        cfg = self.config  # read per attempt: a reload applies from the next one
        headers = signing.headers(self._key, record.webhook_id, int(self._clock()), body)
        headers["Content-Type"] = record.content_type
        headers["X-Internal-Auth"] = cfg.token
        started = time.perf_counter()
        try:
            async with self._session.post(
                cfg.url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)
            ) as response:
                await response.read()
                code = response.status
                retry_after = None
                if code in (429, 503):
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                status.callback_last_status = code
                return Attempt(code, retry_after, f"HTTP {code}")
        except asyncio.TimeoutError:
            return Attempt(None, None, f"timed out after {cfg.timeout_s} s")
        except aiohttp.ClientError as exc:
            return Attempt(None, None, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # anything else aiohttp raises: a failed attempt, not a lost task
            events.exception("callback_attempt_error", job_id=record.job_id)
            return Attempt(None, None, f"{type(exc).__name__}: {exc}")
        finally:
            self.metrics.callback_duration.observe(time.perf_counter() - started)
