"""The worker's exit statuses: part of the wire contract between the worker and its supervisor.

The worker ends with one of these, and the supervisor reads them: a start that failed on its
configuration or on a missing model file is told apart from a crash of unknown cause (it is
still retried like a crash, since files may still be mounting), and one that no retry can mend
(UNRUNNABLE: the supervisor gives up at once). Defined once, here, because
both processes import `ipc/` and nothing else of each other.
"""

from __future__ import annotations

import enum


class WorkerExit(enum.IntEnum):
    STOPPED = 0  # asked to shut down (or its I/O loop ended in order)
    INTERNAL_ERROR = 1  # a bug in the worker itself (logged there as `worker_internal_error`)
    BAD_SPEC = 2  # started without a valid spec in its environment: not by `gpu-server serve`
    LOAD_FAILED = 4  # the backend could not load (configuration, missing model file); reported first
    PARENT_GONE = 5  # its supervisor is gone
    # The backend refused its model on this engine (a checkpoint the engine would run
    # degraded); reported first. Not retried: a restart would refuse again.
    UNRUNNABLE = 6


MEANINGS = {
    WorkerExit.STOPPED: "stopped",
    WorkerExit.INTERNAL_ERROR: "an internal error of the worker",
    WorkerExit.BAD_SPEC: "no valid worker spec in its environment",
    WorkerExit.LOAD_FAILED: "the backend could not load",
    WorkerExit.PARENT_GONE: "its supervisor was gone",
    WorkerExit.UNRUNNABLE: "the backend refused its model on this engine (not retried)",
}

# Starts that failed before the worker could serve: not crashes, though retried like them.
STARTUP_FAILURES = frozenset({WorkerExit.BAD_SPEC, WorkerExit.LOAD_FAILED, WorkerExit.UNRUNNABLE})
# Starts that no retry can mend: the supervisor gives the worker up at once.
PERMANENT_FAILURES = frozenset({WorkerExit.UNRUNNABLE})


def meaning(status: int) -> str | None:
    """What a worker's exit status says, or None for a status the worker never uses."""
    try:
        return MEANINGS[WorkerExit(status)]
    except ValueError:
        return None


def is_startup_failure(status: int) -> bool:
    return status in STARTUP_FAILURES


def is_permanent(status: int) -> bool:
    """A start that failed for a reason a restart would meet again."""
    return status in PERMANENT_FAILURES
