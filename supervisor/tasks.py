"""Background work whose death by a bug is logged and reported, never silent."""

from __future__ import annotations

import asyncio
import traceback
from typing import Callable

from ipc.jsonlog import EventLog

events = EventLog("supervisor.tasks")


def watched(coro, name: str, on_fatal: Callable[[str], None]) -> asyncio.Task:
    """A background task; an exception that ends it goes to `report_bug`."""
    task = asyncio.get_running_loop().create_task(coro, name=name)

    def done(t: asyncio.Task) -> None:
        if not t.cancelled() and t.exception() is not None:
            report_bug(name, t.exception(), on_fatal)  # type: ignore[arg-type]

    task.add_done_callback(done)
    return task


def report_bug(name: str, exc: BaseException, on_fatal: Callable[[str], None]) -> None:
    """Log `internal_error` with the traceback and tell `on_fatal` (the node then stops)."""
    events.error(
        "internal_error", task=name, exc_type=type(exc).__name__, error=str(exc),
        traceback="".join(traceback.format_exception(exc)).rstrip(),
    )
    on_fatal(f"task {name} failed: {type(exc).__name__}: {exc}")
