"""Steady traffic on a real node, every answer recorded: what a recycle must not disturb.

Jobs are submitted at a steady pace (202, or 429 while the GPU and the queue are full),
/health is polled between them, and /gpu/status now and then (its `worker.next`). Used by
the integration tests and by bench/recycle_overlap.py.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any, Callable

import aiohttp

from tests.support.client import submit, tryon_form
from tests.support.node import TOKEN


class Traffic:
    def __init__(
        self,
        http: aiohttp.ClientSession,
        base_url: str,
        prefix: str,
        *,
        submit_every_s: float = 0.1,
        poll_every_s: float = 0.02,
        job_config: dict | None = None,
    ) -> None:
        self.http = http
        self.base_url = base_url
        self.prefix = prefix
        self.submit_every_s = submit_every_s
        self.poll_every_s = poll_every_s
        self.job_config = job_config
        self.accepted: list[str] = []
        self.tryon: Counter[int] = Counter()  # status -> answers
        self.health: Counter[int] = Counter()
        # Every 503 of either route: (monotonic time, route, the body's status or message).
        self.not_ready: list[tuple[float, str, str]] = []
        self.next_seen: list[dict[str, Any]] = []  # non-null `worker.next` values, in order
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Traffic:
        self._tasks = [asyncio.create_task(self._submit()), asyncio.create_task(self._poll())]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for outcome in await asyncio.gather(*self._tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                raise outcome  # the traffic itself failed (the node went away, say)

    async def until(self, predicate: Callable[[], bool], timeout: float = 90.0, what: str = "condition") -> None:
        """Wait (with traffic going on) until `predicate` holds; fail after `timeout`."""
        deadline = time.monotonic() + timeout
        while not predicate():
            for task in self._tasks:
                if task.done():
                    task.result()  # raises what killed the traffic
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} not reached within {timeout} s (tryon {dict(self.tryon)})")
            await asyncio.sleep(0.02)

    @property
    def count_503(self) -> int:
        return len(self.not_ready)

    async def _submit(self) -> None:
        n = 0
        while True:
            n += 1
            job_id = f"{self.prefix}-{n}"
            status, _, body = await submit(self.http, self.base_url, tryon_form(job_id, config=self.job_config))
            self.tryon[status] += 1
            if status == 202:
                self.accepted.append(job_id)
            elif status == 503:
                self.not_ready.append((time.monotonic(), "/tryon", str(body.get("message"))))
            else:
                assert status == 429, (status, body)  # nothing else is right for a valid job
            await asyncio.sleep(self.submit_every_s)

    async def _poll(self) -> None:
        n = 0
        while True:
            n += 1
            async with self.http.get(f"{self.base_url}/health") as response:
                body = await response.json()
                self.health[response.status] += 1
                if response.status == 503:
                    self.not_ready.append((time.monotonic(), "/health", body["status"]))
            if n % 5 == 0:
                headers = {"X-Internal-Auth": TOKEN}
                async with self.http.get(f"{self.base_url}/gpu/status", headers=headers) as response:
                    worker = (await response.json())["worker"]
                    if worker["next"] is not None:
                        self.next_seen.append(worker["next"])
            await asyncio.sleep(self.poll_every_s)
