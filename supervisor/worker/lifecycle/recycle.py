"""The lifecycle core's recycle rules: replacing a worker that works (SIGUSR1, a reload that
changes what the worker is spawned with). The one place where two workers live at once.

Two ways, by `worker.overlap` (`auto` measures first: MeasureMemory -> MemoryMeasured,
judged by `overlap.decide`):
- overlap: a `next` generation is spawned and loads beside the current one, which keeps
  taking jobs until the next is ready. Once nothing is in the current one's prepare or model
  stage, the next becomes current (the switch: no gap on the GPU) and the old one is asked
  to exit once the jobs still finishing there are done. Only the current worker's state is
  the node's, so /health stays 200 throughout. A next worker that dies before the switch
  is a failed recycle, not a crash: the current one serves on and nothing is restarted.
  If the current one dies meanwhile, the next (already loading the new settings) takes
  over instead of a fresh spawn.
- plain: the worker takes no new job; after the last one it holds it is asked to exit and
  a new one is spawned; the node is `restarting`, then `starting`, until it is ready.

A recycle asked while a next worker loads supersedes it: that one loads the settings from
before the ask, so it is ended, and once it is gone the recycle starts again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.worker.generation import Generation, Phase
from supervisor.worker.lifecycle.events import (
    CountOverlap, CountRestart, MeasureMemory, MemoryMeasured, RecycleAsked, Spawn,
)
from supervisor.worker.overlap import OverlapMode, OverlapResult, decide
from supervisor.worker.reasons import KillReason, RestartReason
from supervisor.worker.state import WorkerState as S

if TYPE_CHECKING:
    from supervisor.worker.lifecycle.base import Core

# The next worker was ended by the node's own stop, or superseded: no failed recycle.
_NOT_A_FAILURE = frozenset({KillReason.RECYCLE, KillReason.STOP, KillReason.QUIT, KillReason.DRAIN_DEADLINE})


class Recycling:
    """A base of `Lifecycle`, which owns the state these rules read and write (`base.Core`)."""

    def _init_recycling(self: Core) -> None:
        self.next: int | None = None  # the generation loading to replace the current one
        self.recycle_pending: str | None = None  # why, until acted on
        self.recycle_asked_at = 0.0
        self.recycle_overlaps: bool | None = None  # decided for the pending recycle; None: not yet
        self.measuring: int | None = None  # the generation whose memory is being measured

    @property
    def next_generation(self: Core) -> Generation | None:
        return self.generations.get(self.next) if self.next is not None else None

    # --- events ----------------------------------------------------------------------

    def on_recycle_asked(self: Core, e: RecycleAsked) -> None:
        if self.stopping:
            return
        self.recycle_pending, self.recycle_asked_at = e.why, self._now
        self._out.log("info", "worker_recycle_requested", why=e.why, state=self.state.value,
                      overlap=self.limits.overlap.value)
        self._maybe_recycle()

    def on_memory_measured(self: Core, e: MemoryMeasured) -> None:
        gen = self.worker
        if self.measuring != e.gen or gen is None or gen.number != e.gen:
            return  # measured for a worker that has gone since (its end settled the recycle)
        self.measuring = None
        if self.recycle_pending is None:
            return
        figures, margin = e.figures, self.limits.overlap_margin_bytes
        decision = decide(figures, margin)
        self._out.log(
            "info", "worker_overlap_decision", overlap=decision.overlap, why=decision.why, pid=gen.pid,
            memory=figures.memory, footprint_bytes=figures.footprint_bytes, free_bytes=figures.free_bytes,
            margin_bytes=margin, source=figures.source or None,
        )
        self.recycle_overlaps = decision.overlap
        if not decision.overlap:
            self._out.emit(CountOverlap(OverlapResult.FELL_BACK))
        self._maybe_recycle()

    # --- rules -------------------------------------------------------------------------

    def _maybe_recycle(self: Core) -> bool:
        """Act on a pending recycle as far as it can be now. True when the current worker
        was asked to go (a plain recycle): it takes no job from then on."""
        gen = self.worker
        if self.recycle_pending is None or gen is None or gen.kill_reason is not None:
            return False  # none asked, or between workers: the next spawn reads the settings in force
        if gen.phase is Phase.SPAWNING:
            return False  # once it is spawned (with the settings from before the ask)
        nxt = self.next_generation
        if nxt is not None:
            if nxt.kill_reason is None:
                self._out.log("info", "worker_recycle_superseded", pid=nxt.pid, generation=nxt.number,
                              why=self.recycle_pending)
                self._retire(nxt, KillReason.RECYCLE, self.limits.stop_grace_s)
            return False  # started again once it is gone
        if self.measuring is not None:
            return False  # decided once the figures are in
        if gen.serving and self.recycle_overlaps is None:
            mode = self.limits.overlap
            if mode is OverlapMode.AUTO:
                assert gen.pid is not None and gen.ready is not None  # serving: spawned and ready
                self.measuring = gen.number
                self._out.emit(MeasureMemory(gen.number, gen.pid, gen.ready.device))
                return False
            self.recycle_overlaps = mode is OverlapMode.ALWAYS
        if gen.serving and self.recycle_overlaps:
            self._start_overlap()
            return False
        if gen.phase is Phase.BUSY:
            return False  # once its jobs are done (none enters it meanwhile: Lifecycle._refusal)
        self.machine.change(S.RESTARTING, f"recycle: {self.recycle_pending}")
        self._retire(gen, KillReason.RECYCLE, self.limits.stop_grace_s)
        return True

    def _start_overlap(self: Core) -> None:
        why, current = self.recycle_pending, self.worker
        assert current is not None
        gen = self._new_generation()  # clears the pending recycle: it reads the settings in force now
        gen.recycle_asked_at = self.recycle_asked_at
        self.next = gen.number
        self._out.log("info", "worker_overlap_started", why=why, generation=gen.number, current_pid=current.pid)
        self._out.emit(Spawn(gen.number))

    def _maybe_switch(self: Core) -> None:
        """Switch to the next worker if it is ready and nothing is in the current one's
        prepare or model stage (it takes no new job once the next is ready); jobs still
        finishing there finish there, and it is asked to exit after the last one."""
        nxt, current = self.next_generation, self.worker
        if nxt is None or nxt.phase is not Phase.IDLE or self.stopping:
            return
        if current is None or not current.serving or not current.model_stage_empty:
            return  # its model stage busy: once it empties; being ended: its exit hands over
        self.current, self.next = nxt.number, None
        assert nxt.ready is not None and nxt.recycle_asked_at is not None
        self._out.log(
            "info", "worker_switched", pid=nxt.pid, generation=nxt.number, previous_pid=current.pid,
            previous_generation=current.number, model_version=nxt.ready.model_version,
            since_asked_s=round(self._now - nxt.recycle_asked_at, 3),
        )
        if current.jobs:
            current.retire_when_done = True  # its finish stage first (its watchdog still watches)
        else:
            self._retire(current, KillReason.RECYCLE, self.limits.stop_grace_s)
        self._out.emit(CountRestart(RestartReason.RECYCLE))  # a recycle, counted as ever
        self._became_ready(nxt)

    def _take_over_by_next(self: Core) -> bool:
        """The current worker died during an overlap: the next one, already loading the new
        settings, becomes current in place of a fresh spawn."""
        nxt = self.next_generation
        if nxt is None or nxt.kill_reason is not None:
            return False
        self.current, self.next = nxt.number, None
        self._out.log("info", "worker_next_takes_over", pid=nxt.pid, generation=nxt.number, phase=nxt.phase.value)
        if nxt.phase is not Phase.SPAWNING:  # (a spawning one says `starting` once it runs)
            self.machine.change(S.STARTING, "the next worker takes over")
        if nxt.phase is Phase.IDLE:
            self._became_ready(nxt)
        return True

    def _next_ended(self: Core, gen: Generation, why: str) -> None:
        """The next worker is gone before the switch."""
        self.next = None
        if not self.stopping and gen.kill_reason not in _NOT_A_FAILURE:
            current = self.worker
            self._out.log("error", "worker_recycle_failed", pid=gen.pid, generation=gen.number, error=why,
                          current_pid=current.pid if current is not None else None)
            self._out.emit(CountOverlap(OverlapResult.FAILED))
        self._maybe_recycle()  # one superseded: start again

    def _drop_next(self: Core) -> None:
        """The node stops or gives up: no switch will come."""
        nxt = self.next_generation
        if nxt is not None and nxt.kill_reason is None:
            self._kill(nxt, KillReason.STOP)
        self.measuring = None
