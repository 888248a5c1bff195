"""What the lifecycle core's parts share: the state and the steps that `Lifecycle` (`core`)
owns, and that its bases, the message rules (`messages`) and the recycle rules
(`recycle`), read, write and call.

The parts name this, never `Lifecycle` itself: the core is built from them, so a part
importing the core would be an import circle. `Lifecycle` has every member listed here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from supervisor.jobs.job import JobResult
    from supervisor.worker.generation import Generation
    from supervisor.worker.lifecycle.events import Limits, Outbox
    from supervisor.worker.reasons import KillReason
    from supervisor.worker.state import StateMachine, WorkerState


class Core(Protocol):
    limits: Limits
    machine: StateMachine
    generations: dict[int, Generation]  # every live worker, by its number
    current: int | None  # the one jobs go to and whose state is the node's
    stopping: bool
    _out: Outbox  # the actions the event being handled asks for
    _now: float  # the event's monotonic time
    # The recycle's (set by `recycle.Recycling._init_recycling`).
    next: int | None
    recycle_pending: str | None
    recycle_asked_at: float
    recycle_overlaps: bool | None
    measuring: int | None

    @property
    def state(self) -> WorkerState: ...

    @property
    def worker(self) -> Generation | None: ...

    @property
    def next_generation(self) -> Generation | None: ...

    # --- the core's steps --------------------------------------------------------------

    def _new_generation(self) -> Generation: ...

    def _retire(self, gen: Generation, reason: KillReason, grace_s: float) -> None: ...

    def _abort(self, gen: Generation, result: JobResult, reason: KillReason) -> None: ...

    def _kill(self, gen: Generation, reason: KillReason) -> None: ...

    def _arm_watchdog(self, gen: Generation) -> None: ...

    def _became_ready(self, gen: Generation) -> None: ...

    def _show_model_stage(self, gen: Generation, why: str) -> None: ...

    # --- the recycle's, called by the message rules -------------------------------------

    def _maybe_recycle(self) -> bool: ...

    def _start_overlap(self) -> None: ...

    def _maybe_switch(self) -> None: ...
