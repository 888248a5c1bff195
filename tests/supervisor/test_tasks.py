"""Background tasks: a death by a bug is reported, never silent."""

from __future__ import annotations

import asyncio

import pytest

from supervisor.tasks import watched


async def test_a_background_task_that_dies_of_a_bug_is_reported_not_silent():
    reported: list[str] = []

    async def buggy():
        raise RuntimeError("a bug")

    task = watched(buggy(), "buggy-loop", reported.append)
    with pytest.raises(RuntimeError):
        await task
    assert reported == ["task buggy-loop failed: RuntimeError: a bug"]
    cancelled = watched(asyncio.sleep(10), "sleeper", reported.append)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert len(reported) == 1  # a cancelled task is not a failure
