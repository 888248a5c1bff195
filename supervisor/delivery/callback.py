"""Delivering a finished job's result to the Asset Service, at least once.

The body (`callback_body`) is built once per job and written to the spool before the first
attempt, so every attempt, also after a restart, sends the same bytes with the same
`webhook-id`. Each attempt (`callback_http`) is started by the one delivery loop
(`loop`); after a failed one, `retry_policy` says when the next is due: first
`callback.max_retries` quick retries, then from the spool until `spool.max_age_s`. A 2xx
removes the entry; any other 4xx is final (`undeliverable`, dead-lettered), and so is a 3xx:
redirects are never followed, so neither the token nor the result goes to a host that was
not configured. Waiting files this process did not write (dead letters replayed with
`gpu-server spool replay` while it runs) are picked up every `spool.rescan_s` and on
SIGHUP (`rescan`), and sent like those found at start.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Callable

import aiohttp

from ipc.jsonlog import EventLog
from supervisor.delivery import signing
from supervisor.delivery.callback_body import build_body, spool_record
from supervisor.delivery.callback_http import Attempt, post
from supervisor.config import CallbackConfig, SpoolConfig
from supervisor.delivery.loop import Clock, Delivery, DeliveryLoop, SpooledJob
from supervisor.jobs.job import CallbackState, Job
from supervisor.metrics.registry import Metrics
from supervisor.delivery.retry_policy import after_failed_attempt
from supervisor.delivery.spool import Spool, SpoolCorrupt

events = EventLog("supervisor.callback")


class CallbackSender:
    def __init__(
        self,
        config: CallbackConfig,
        node_id: str,
        metrics: Metrics,
        spool: Spool,
        spool_config: SpoolConfig = SpoolConfig(),
        *,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.node_id = node_id
        self.metrics = metrics
        self.spool = spool
        self.spool_config = spool_config
        self._jitter = jitter
        self._key = signing.parse_secret(config.signing_secret) if config.signing_secret else None
        self.deliveries = DeliveryLoop(self._attempt, clock=clock)
        self._clock = self.deliveries.clock
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self._loop_task: asyncio.Task | None = None
        self._rescan_task: asyncio.Task | None = None
        self._rescanning = asyncio.Lock()
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
            self.deliveries.schedule(Delivery(record, SpooledJob(record), name=name), 0.0)
        if len(self.spool):
            events.info("spool_loaded", pending=len(self.spool))
        self._loop_task = asyncio.get_running_loop().create_task(self.deliveries.run(), name="deliveries")
        self._rescan_task = asyncio.get_running_loop().create_task(self._rescan_every(), name="spool-rescan")

    async def rescan(self, why: str) -> int:
        """Schedule the waiting files this process does not know (a replay since it started):
        due at once, like those found at start. How many it took in."""
        async with self._rescanning:  # the timer's and a SIGHUP's: one at a time
            found = await asyncio.to_thread(self.spool.scan, self.spool.known())
            # A job whose result is on its way already keeps its one place in the loop; its
            # other file waits for a later rescan.
            found = [f for f in found if f.record is None or self.deliveries.get(f.record.job_id) is None]
            adopted = self.spool.adopt(found)
        for name, record in adopted:
            self.deliveries.schedule(Delivery(record, SpooledJob(record), name=name), 0.0)
        if adopted:
            events.info(
                "spool_rescanned", why=why, found=len(adopted), job_ids=[r.job_id for _, r in adopted],
                pending=len(self.spool),
            )
        return len(adopted)

    async def _rescan_every(self, period_s: float | None = None) -> None:
        while True:
            # Read each round: a reload applies from the next one.
            await asyncio.sleep(period_s or self.spool_config.rescan_s)
            try:
                await self.rescan("timer")
            except Exception as exc:  # the disk, for now: the next round tries again
                events.error("spool_rescan_failed", error=f"{type(exc).__name__}: {exc}", dir=str(self.spool.root))

    def pending_job(self, job_id: str) -> Job | SpooledJob | None:
        """A job whose result waits for delivery: the job store may have forgotten it, or
        it ran before this process started (then known from its spool entry)."""
        delivery = self.deliveries.get(job_id)
        return delivery.status if delivery is not None else None  # type: ignore[return-value]

    def submit(self, job: Job) -> None:
        self._unspooled += 1
        self._all_spooled.clear()
        task = asyncio.get_running_loop().create_task(self.deliver(job), name=f"callback-{job.job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, wait_s: float, hurry: asyncio.Future | None = None, hurry_wait_s: float = 0.0) -> None:
        """Give deliveries under way (their quick retries) up to `wait_s` to finish, then stop
        them (their results stay in the spool). Once `hurry` is done, what is left of the
        wait shrinks to `hurry_wait_s`. Whatever happens, every result is on disk first."""
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
        background = {t for t in (self._loop_task, self._rescan_task) if t is not None}
        for task in background:
            task.cancel()
        if background:
            await asyncio.wait(background)
        if self._session is not None:
            await self._session.close()

    async def deliver(self, job: Job) -> None:
        """Spool the result, then hand it to the delivery loop; returns once its quick
        retries are over (delivered, final, or left to the spool's redelivery)."""
        try:
            delivery = await self._spool(job)
        finally:
            self._unspooled -= 1
            if self._unspooled == 0:
                self._all_spooled.set()
        delivery.quick_over = asyncio.get_running_loop().create_future()
        self.deliveries.schedule(delivery, 0.0)
        await delivery.quick_over

    async def _spool(self, job: Job) -> Delivery:
        """Build the body and store it durably before the first attempt; the job's
        image goes from memory (the body holds it now)."""
        body = await build_body(job, self.node_id)
        job.release_output()
        record = spool_record(job, body, self._clock.now())
        delivery = Delivery(record, job, body=body.data, quick_attempts=1 + self.config.max_retries)
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

    # --- one attempt, started by the loop ------------------------------------------------

    async def _attempt(self, delivery: Delivery) -> float | None:
        """One attempt; seconds until the next, or None when done with this result."""
        record, cfg = delivery.record, self.spool_config
        from_spool = delivery.from_spool
        if from_spool and self._clock.now() >= record.spooled_at + cfg.max_age_s:
            self._expire(delivery)
            return None
        body = delivery.body
        if body is None:
            try:
                body = await self._read(delivery)
            except FileNotFoundError:  # deleted by hand: the operator gave it up
                events.warning("spool_entry_gone", job_id=record.job_id, file=delivery.name)
                self.spool.remove(delivery.name)  # type: ignore[arg-type]
                return None
            except SpoolCorrupt as exc:
                self.spool.quarantine(delivery.name, str(exc))  # type: ignore[arg-type]
                return None
            except OSError as exc:  # the disk, for now: try again later, as for a failed attempt
                events.error("spool_read_failed", job_id=record.job_id, file=delivery.name, error=str(exc))
                return cfg.retry_max_s
        delivery.attempts += 1
        outcome = await self._post(delivery, body, from_spool)
        del body
        if outcome.delivered or outcome.final:
            self._settle(delivery, outcome)
            return None
        retry = after_failed_attempt(
            delivery.attempts, delivery.quick_attempts, cfg, outcome.retry_after, self._jitter()
        )
        if retry.from_spool:
            if delivery.name is not None:
                delivery.body = None  # read back from the spool when due
            delivery.end_quick_phase()
        left = record.spooled_at + cfg.max_age_s - self._clock.now()
        if from_spool and retry.delay_s >= left:
            # No attempt fits before the age limit: this was the last one. The entry stays
            # until the limit passes (nothing goes before), then is removed.
            delivery.status.callback_state = CallbackState.RETRYING
            self.metrics.callback_attempts.labels("failure").inc()
            events.error(
                "callback_failed", job_id=record.job_id, attempt=delivery.status.callback_attempts,
                status=outcome.status, final=True, from_spool=from_spool,
                reason=f"{outcome.problem}; the age limit passes before another attempt",
            )
            return max(left, 0.0)
        how = "from the spool, " if from_spool else "quick retries spent, " if retry.from_spool else ""
        delivery.status.callback_state = CallbackState.RETRYING
        self.metrics.callback_attempts.labels("retry").inc()
        events.warning(
            "callback_failed", job_id=record.job_id, attempt=delivery.status.callback_attempts,
            status=outcome.status, final=False, reason=f"{how}{outcome.problem}",
            retry_in_s=round(retry.delay_s, 3), spooled=delivery.name is not None,
        )
        return retry.delay_s

    async def _read(self, delivery: Delivery) -> bytes:
        assert delivery.name is not None
        return await asyncio.to_thread(self.spool.read, delivery.name)

    async def _post(self, delivery: Delivery, body: bytes, from_spool: bool) -> Attempt:
        """One POST, signed for this attempt, with the settings in force now."""
        assert self._session is not None, "start() first"
        record, status = delivery.record, delivery.status
        status.callback_state = CallbackState.DELIVERING
        status.callback_attempts += 1
        cfg = self.config  # read per attempt: a reload applies from the next one
        events.info(
            "callback_attempt", job_id=record.job_id, attempt=status.callback_attempts, url=cfg.url,
            webhook_id=record.webhook_id, from_spool=from_spool,
        )
        headers = signing.headers(self._key, record.webhook_id, int(self._clock.now()), body)
        headers["Content-Type"] = record.content_type
        headers["X-Internal-Auth"] = cfg.token
        started = time.perf_counter()
        try:
            outcome = await post(self._session, cfg.url, body, headers, cfg.timeout_s, record.job_id)
        finally:
            self.metrics.callback_duration.observe(time.perf_counter() - started)
        if outcome.status is not None:
            status.callback_last_status = outcome.status
        return outcome

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
        delivery.end_quick_phase()

    def _expire(self, delivery: Delivery) -> None:
        record = delivery.record
        delivery.status.callback_state = CallbackState.UNDELIVERABLE
        self.metrics.spool_expired.inc()
        if delivery.name is not None:
            self.spool.remove(delivery.name)
        events.error(
            "spool_entry_expired", job_id=record.job_id, webhook_id=record.webhook_id,
            age_s=round(self._clock.now() - record.spooled_at), max_age_s=self.spool_config.max_age_s,
            attempts=delivery.status.callback_attempts,
        )
        delivery.end_quick_phase()
