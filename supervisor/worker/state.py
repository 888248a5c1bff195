"""The worker's states as data: the states, their allowed transitions, and the restart policy.

Pure logic with no process or socket in sight, so every rule here is unit-tested
directly; the lifecycle core (`lifecycle.core`) drives it.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Callable

from supervisor.delivery.retry_policy import backoff_s


class WorkerState(str, enum.Enum):
    STARTING = "starting"  # spawned, loading the model
    READY = "ready"  # idle, model loaded
    BUSY = "busy"  # running a job
    # Not serving and about to be replaced: being killed, dead and waiting out the backoff,
    # or retiring for a recycle without overlap.
    RESTARTING = "restarting"
    FAILED = "failed"  # given up
    STOPPED = "stopped"  # none spawned yet (the initial state), or stopped with the node


S = WorkerState
TRANSITIONS: dict[WorkerState, frozenset[WorkerState]] = {
    # STOPPED -> RESTARTING or FAILED: the very first spawn failed (fork refused, say).
    S.STOPPED: frozenset({S.STARTING, S.RESTARTING, S.FAILED}),
    S.STARTING: frozenset({S.READY, S.RESTARTING, S.FAILED, S.STOPPED}),
    S.READY: frozenset({S.BUSY, S.RESTARTING, S.FAILED, S.STOPPED}),
    S.BUSY: frozenset({S.READY, S.RESTARTING, S.FAILED, S.STOPPED}),
    S.RESTARTING: frozenset({S.STARTING, S.FAILED, S.STOPPED}),
    S.FAILED: frozenset({S.STOPPED}),
}

# States in which the model is loaded and jobs can be handed over.
SERVING = frozenset({S.READY, S.BUSY})


class InvalidTransition(RuntimeError):
    pass


class StateMachine:
    """Holds the current state; every change is checked and reported to `on_change`."""

    def __init__(self, on_change: Callable[[WorkerState, WorkerState, str], None]) -> None:
        self.state = S.STOPPED
        self._on_change = on_change

    def change(self, new: WorkerState, why: str) -> None:
        old = self.state
        if new is old:
            return
        if new not in TRANSITIONS[old]:
            raise InvalidTransition(f"worker cannot go from {old.value} to {new.value} ({why})")
        self.state = new
        self._on_change(old, new, why)


class RestartPolicy:
    """When to restart a worker that died unplanned, and when to give up.

    Delay: at once after a crash that follows a healthy run; then 1 s doubling, capped.
    A run counts as healthy once it lasted `healthy_after_s`; a healthy run resets the
    count of crashes in a row. Giving up: more than `max_restarts` unplanned restarts
    within `restart_window_s` (a crash loop no backoff will cure: a missing model file,
    a broken driver). Planned recycles are not recorded here.
    """

    def __init__(
        self,
        max_backoff_s: float,
        healthy_after_s: float,
        max_restarts: int = 10,
        restart_window_s: float = 600.0,
    ) -> None:
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.crashes_in_a_row = 0
        self._recent: deque[float] = deque()

    def note_run(self, ran_for_s: float) -> None:
        """A worker ran `ran_for_s` before it ended (by a crash or a planned recycle)."""
        if ran_for_s >= self.healthy_after_s:
            self.crashes_in_a_row = 0

    def next_delay(self, ran_for_s: float) -> float:
        self.note_run(ran_for_s)
        delay = 0.0 if self.crashes_in_a_row == 0 else backoff_s(self.crashes_in_a_row - 1, 1.0, self.max_backoff_s)
        self.crashes_in_a_row += 1
        return delay

    def after_exit(self, planned: bool, ran_for_s: float, now: float) -> float | None:
        """Seconds until the next spawn, or None: one crash too many, give up. A planned
        end (a recycle) is no crash: at once, and not recorded."""
        if planned:
            self.note_run(ran_for_s)
            return 0.0
        if self.record_crash(now):
            return None
        return self.next_delay(ran_for_s)

    def record_crash(self, now: float) -> bool:
        """Note an unplanned exit at `now` (monotonic seconds); True when it is one too many."""
        self._recent.append(now)
        while self._recent and self._recent[0] <= now - self.restart_window_s:
            self._recent.popleft()
        return len(self._recent) > self.max_restarts

    @property
    def recent_crashes(self) -> int:
        return len(self._recent)

    def reconfigure(
        self, max_backoff_s: float, healthy_after_s: float, max_restarts: int, restart_window_s: float
    ) -> None:
        """New limits from a reloaded config; the history so far is kept."""
        self.max_backoff_s = max_backoff_s
        self.healthy_after_s = healthy_after_s
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
