"""Job events for the orchestrator (`events.url`): `job.started`, then `job.progress`.

Best effort, and never in the way: the final word on a job is its callback. Each event is
one POST of a small JSON body with one attempt of at most `events.timeout_s`, never retried
and never spooled, in a task of its own on an HTTP session of its own (a receiver that hangs
holds none of the callbacks' connections). At most one event per job is in flight; an event
due meanwhile is dropped, as is every event once the node drains. `job.progress` goes at
most once per `events.min_interval_s` per job; the updates in between are not events.

Like a callback: `X-Internal-Auth` (`events.token`, else `callback.token`), `User-Agent`,
a `webhook-id` of its own per event and, with `callback.signing_secret`, the Standard
Webhooks signature; redirects are never followed and at most 64 KiB of an answer is read.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Callable

import aiohttp

from ipc.jsonlog import EventLog
from supervisor.delivery import signing
from supervisor.delivery.callback_http import ANSWER_READ_BYTES, USER_AGENT, read_at_most
from supervisor.config import CallbackConfig, EventsConfig
from supervisor.jobs.job import Job, rfc3339
from supervisor.metrics.registry import Metrics

STARTED = "job.started"
PROGRESS = "job.progress"
events = EventLog("supervisor.events")


class EventSender:
    def __init__(
        self,
        config: EventsConfig,
        callback: CallbackConfig,
        node_id: str,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.metrics = metrics
        self._clock = clock
        self._wall = wall
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[str, asyncio.Task] = {}  # job id -> its event on the way
        self._last_progress: dict[str, float] = {}  # job id -> when its last progress event was due
        self._draining = False
        self.reconfigure(config, callback)

    def reconfigure(self, config: EventsConfig, callback: CallbackConfig) -> None:
        """A reloaded config (SIGHUP): the next event uses it."""
        self.config = config
        self._token = config.token or callback.token
        self._key = signing.parse_secret(callback.signing_secret) if callback.signing_secret else None

    @property
    def enabled(self) -> bool:
        return self.config.url is not None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession()

    def drain(self) -> None:
        """The node drains: every event from now on is dropped."""
        self._draining = True

    async def wait_idle(self) -> None:
        """Until no event is on its way."""
        while self._in_flight:
            await asyncio.gather(*self._in_flight.values(), return_exceptions=True)

    async def close(self) -> None:
        """Drop what is still on its way (counted `failed`) and close the session."""
        self.drain()
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- what the node reports ---------------------------------------------------------

    def started(self, job: Job) -> None:
        """The job was handed to a worker (again, after a crash, where so configured)."""
        self._last_progress.pop(job.job_id, None)
        if self.enabled:
            self._emit(job, STARTED, None, None, job.started_at or self._wall())

    def progress(self, job: Job) -> None:
        """The running job reported a step (as recorded in `job.progress`)."""
        if not self.enabled or job.progress is None:
            return
        now = self._clock()
        last = self._last_progress.get(job.job_id)
        if last is not None and now - last < self.config.min_interval_s:
            return  # within the interval: not an event, not counted
        self._last_progress[job.job_id] = now
        step, total = job.progress
        self._emit(job, PROGRESS, step, total, self._wall())

    def forget(self, job: Job) -> None:
        """The job has ended: no more events for it."""
        self._last_progress.pop(job.job_id, None)

    # --- sending -----------------------------------------------------------------------

    def _emit(self, job: Job, kind: str, step: int | None, total: int | None, at: float) -> None:
        # Called from the dispatcher and from the worker's message handling: whatever goes
        # wrong here costs this event, never the caller.
        try:
            self._send(job, kind, step, total, at)
        except Exception:
            events.exception("event_error", job_id=job.job_id, type=kind)
            self.metrics.events.labels(kind, "failed").inc()

    def _send(self, job: Job, kind: str, step: int | None, total: int | None, at: float) -> None:
        busy = job.job_id in self._in_flight
        url, session = self.config.url, self._session
        if self._draining or busy or session is None or url is None:
            self.metrics.events.labels(kind, "dropped").inc()
            why = "previous event in flight" if busy else "node draining"
            events.debug("event_dropped", job_id=job.job_id, type=kind, step=step, why=why)
            return
        body = json.dumps({
            "type": kind, "job_id": job.job_id, "user_id": job.user_id, "session_id": job.session_id,
            "node_id": self.node_id, "step": step, "total": total, "at": rfc3339(at),
        }, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Internal-Auth": self._token,
            "User-Agent": USER_AGENT,
            **signing.headers(self._key, f"msg_{uuid.uuid4().hex}", int(self._wall()), body),
        }
        loop = asyncio.get_running_loop()
        # Everything the attempt needs is fixed now: a reload meanwhile applies to the next event.
        attempt = self._post(session, url, self.config.timeout_s, headers, body, kind, job.job_id)
        task = loop.create_task(attempt, name=f"event-{kind}")
        self._in_flight[job.job_id] = task
        task.add_done_callback(lambda done: self._done(job.job_id, done))

    def _done(self, job_id: str, task: asyncio.Task) -> None:
        if self._in_flight.get(job_id) is task:
            del self._in_flight[job_id]

    async def _post(
        self, session: aiohttp.ClientSession, url: str, timeout_s: float, headers: dict[str, str], body: bytes,
        kind: str, job_id: str,
    ) -> None:
        """One attempt; never raises (but for its own cancellation, at close)."""
        problem = None
        try:
            async with session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,  # neither the token nor the event goes anywhere else
            ) as response:
                await read_at_most(response, ANSWER_READ_BYTES)
                if not 200 <= response.status < 300:
                    problem = f"HTTP {response.status}"
        except asyncio.CancelledError:
            self._count(kind, job_id, "failed", "the node stopped before an answer")
            raise
        except asyncio.TimeoutError:
            problem = f"timed out after {timeout_s} s"
        except aiohttp.ClientError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # anything else aiohttp raises costs this event only
            events.exception("event_error", job_id=job_id, type=kind)
            problem = f"{type(exc).__name__}: {exc}"
        self._count(kind, job_id, "failed" if problem else "sent", problem)

    def _count(self, kind: str, job_id: str, result: str, problem: str | None) -> None:
        self.metrics.events.labels(kind, result).inc()
        if problem is None:
            events.debug("event_sent", job_id=job_id, type=kind)
        else:
            events.info("event_failed", job_id=job_id, type=kind, error=problem)
