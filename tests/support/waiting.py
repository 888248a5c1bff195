"""Waiting in a test for something only visible by looking (a log record, a counter), with
a deadline that turns a hang into a failure. Where an event can be awaited, await it instead."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
