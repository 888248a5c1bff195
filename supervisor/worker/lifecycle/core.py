"""The worker's lifecycle as a pure core: events in, actions out (`events`).

No process, socket or clock of its own: `handle(event, now)` applies the rules and returns
what to do; the shell (`supervisor.worker.shell`) does it and feeds back what happens. The rules:
restarts (at once after a healthy run, then backoff; a crash loop gives up), the watchdog
(a start's time, a job's time, heartbeats), what each message from a worker means
(`messages`), and recycling (`recycle`: after the current job, or with
the next worker loading beside the current one).

Every spawn is a generation (`generation.Generation`), keyed by its number; events name the
generation they come from and actions the one they are for. One generation is `current`:
the one jobs go to and whose state the node reports. During a recycle with overlap a second
one is `next`: its messages, timers and kills stay apart from the current one's, and its
states never touch the node's.
"""

from __future__ import annotations

from typing import Any

from ipc.messages import CancelJob, Ready, Shutdown
from supervisor.worker.generation import Generation, Phase, RunningJob, Stage
from supervisor.jobs.job import JobResult
from supervisor.worker.lifecycle.events import (
    AbortAsked, Action, CancelAsked, CountOverlap, CountRestart, EndJob, Exited, GiveUp, JobOffered, Kill, Limits,
    Outbox, Reconfigured, RefuseJob, ReportReady, ReportState, Send, SendFailed, SendJob, Spawn, SpawnFailed,
    Spawned, Start, StopAsked, Timer, TimerFired, TimerKind, handler_name,
)
from supervisor.worker.lifecycle.messages import WorkerMessages
from supervisor.worker.lifecycle.recycle import Recycling
from supervisor.worker.overlap import OverlapResult
from supervisor.worker.reasons import KillReason, RestartReason
from supervisor.worker.watchdog import Watchdog
from supervisor.worker.state import SERVING, RestartPolicy, StateMachine, WorkerState

S = WorkerState
# A watchdog timer that fires this much after it was due says our event loop was held up:
# the worker's messages of that time are judged once read, LATE_RECHECK_S later.
LATE_LOOP_S = 0.5
LATE_RECHECK_S = 0.25


class Lifecycle(WorkerMessages, Recycling):
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.policy = RestartPolicy(limits.max_backoff_s, limits.healthy_after_s, limits.max_restarts,
                                    limits.restart_window_s)
        self.machine = StateMachine(lambda old, new, why: self._out.emit(ReportState(old, new, why)))
        self.generations: dict[int, Generation] = {}
        self.current: int | None = None
        self.last_ready: Ready | None = None  # what runs (or ran) on this node, kept across restarts
        self.restarts = 0  # unplanned restarts (a recycle is not one)
        self.stopping = False
        self.last_generation = 0  # the number of the latest spawn asked for
        self._init_recycling()
        self._out = Outbox()
        self._now = 0.0

    # --- what the shell and the node read ------------------------------------------

    @property
    def state(self) -> WorkerState:
        return self.machine.state

    @property
    def worker(self) -> Generation | None:
        """The current worker: jobs go to it, and its state is the node's."""
        return self.generations.get(self.current)  # type: ignore[arg-type]

    @property
    def finished(self) -> bool:
        """Stopping, and no worker left alive."""
        return self.stopping and not self.generations

    @property
    def accepting(self) -> bool:
        """Whether a job offered now would be handed to the current worker."""
        return self._refusal() is None

    def _refusal(self) -> str | None:
        """Why a job offered now would not be handed over; None: it would."""
        gen = self.worker
        if gen is None or not gen.serving or gen.kill_reason is not None or self.state not in SERVING:
            return "the worker is not ready"
        if gen.in_stage(Stage.PREPARE) is not None:
            return "the worker is preparing another job"  # one job before the model at a time
        if self.recycle_pending is not None and self.recycle_overlaps is False:
            return "the worker is being recycled"  # a plain recycle: nothing new enters it
        nxt = self.next_generation
        if nxt is not None and nxt.phase is Phase.IDLE:
            return "the worker is being replaced"  # the next one is ready: it takes the next job
        return None

    def handle(self, event: Any, now: float) -> list[Action]:
        """Apply `event` (an event of `events`) at monotonic time `now`; what to do.
        Each event type is taken by the method `on_<its name in snake case>`."""
        self._now = now
        try:
            getattr(self, handler_name("on_", type(event)))(event)
        finally:
            actions = self._out.take()  # never carried over to the next event, even after a bug
        return actions

    # --- events ----------------------------------------------------------------------

    def on_start(self, _: Start) -> None:
        self._spawn()

    def on_spawned(self, e: Spawned) -> None:
        gen = self.generations[e.gen]
        gen.pid = e.pid
        gen.spawned_at = gen.last_heard = self._now
        gen.phase = Phase.LOADING
        if gen.kill_reason is not None:  # ended while it was being spawned (a stop)
            self._kill(gen, gen.kill_reason)
            return
        self._set_state_of(gen, S.STARTING, f"spawned pid {e.pid}")
        self._out.log("info", "worker_started", pid=e.pid, worker_id=e.worker_id, generation=gen.number,
                      next=gen.number == self.next)
        self._out.set_timer(Timer(TimerKind.STARTUP, gen.number), gen.startup_timeout_s)
        self._maybe_recycle()  # asked while it was spawned with the settings before

    def on_spawn_failed(self, e: SpawnFailed) -> None:
        self._after_end(self.generations.pop(e.gen), RestartReason.EXIT.value, e.error)

    def on_send_failed(self, e: SendFailed) -> None:
        self._out.emit(RefuseJob(e.job_id, "the worker could not be reached"))
        if (gen := self.generations.get(e.gen)) is not None:
            gen.jobs.pop(e.job_id, None)  # it never reached the worker: still the caller's
            self._out.log("warning", "worker_abort", pid=gen.pid, why="the worker's socket is gone")
            self._abort(gen, JobResult.failure("worker_crashed", "unreachable"), KillReason.PROTOCOL)

    def on_exited(self, e: Exited) -> None:
        gen = self.generations.pop(e.gen, None)
        if gen is None:
            return
        self._out.cancel_timers_of(gen.number)
        report = gen.exit_report(e.returncode, self.stopping)
        if report.unreported_startup_failure:  # its status still tells a start that failed
            self._out.log("error", "worker_startup_failed", pid=gen.pid, reason=f"exit status {e.returncode}",
                          error=report.fields["description"])
        self._out.log(report.level, "worker_exited", **report.fields)
        for job_id, result in report.job_results.items():  # in the order they were handed over
            self._out.emit(EndJob(job_id, result))
        gen.jobs.clear()
        self._after_end(gen, report.reason, gen.failure(report), report.permanent)

    def on_timer_fired(self, e: TimerFired) -> None:
        self._out.timers.discard(e.timer)
        kind, number = e.timer
        gen = self.generations.get(number)
        if kind is TimerKind.BACKOFF:
            if not self.stopping and self.current is None and self.state is not S.FAILED:
                self._spawn()
        elif gen is None:
            return
        elif kind is TimerKind.STARTUP and gen.phase is Phase.LOADING:
            self._out.log("error", "worker_startup_timeout", pid=gen.pid, startup_timeout_s=gen.startup_timeout_s)
            self._kill(gen, KillReason.START_TIMEOUT)
        elif kind is TimerKind.WATCHDOG and gen.serving:
            late_s = self._now - gen.watch_due
            if late_s > LATE_LOOP_S:
                # Our own loop was held up (a stall on the event loop), not the worker: what it
                # sent meanwhile may still wait unread in the socket. Judged once that is read.
                self._out.log("warning", "supervisor_loop_late", pid=gen.pid, late_s=round(late_s, 3))
                self._out.set_timer(Timer(TimerKind.WATCHDOG, gen.number), LATE_RECHECK_S)
                gen.watch_due = self._now + LATE_RECHECK_S
                return
            self._watch(gen)
        elif kind is TimerKind.RETIRE and gen.phase is Phase.LEAVING:
            self._out.log("warning", "worker_stop_timeout", pid=gen.pid, grace_s=gen.retire_grace_s)
            self._kill(gen, gen.kill_reason or KillReason.STOP)

    def on_job_offered(self, e: JobOffered) -> None:
        why = self._refusal()
        gen = self.worker
        if why is not None or gen is None:
            self._out.emit(RefuseJob(e.job_id, why or "the worker is not ready"))
            return
        gen.jobs[e.job_id] = RunningJob(e.job_id, self._now, Stage.PREPARE, self._now)
        gen.phase = Phase.BUSY
        self._out.emit(SendJob(gen.number, e.job_id))
        self._arm_watchdog(gen)  # the job's deadline may come before the heartbeat's

    def on_cancel_asked(self, e: CancelAsked) -> None:
        for gen in self.generations.values():
            job = gen.jobs.get(e.job_id)
            if job is not None and job.stage is not Stage.FINISH:  # past its model stage: too late
                self._out.log("info", "job_cancel_sent", pid=gen.pid, job_id=e.job_id, stage=job.stage.value)
                self._out.emit(Send(gen.number, CancelJob(job_id=e.job_id)))  # a dead worker ends it anyway
                return

    def on_abort_asked(self, e: AbortAsked) -> None:
        for gen in list(self.generations.values()):
            self._out.log("warning", "worker_abort", pid=gen.pid, why=e.why)
            self._abort(gen, e.result, e.reason)

    def on_stop_asked(self, e: StopAsked) -> None:
        self.stopping = True
        self.recycle_pending = None
        self._drop_next()  # no switch from now on
        self._out.cancel_timer(Timer(TimerKind.BACKOFF))
        grace = e.grace_s
        for gen in list(self.generations.values()) if grace is not None else ():  # without: it may go on
            if gen.phase is Phase.IDLE and gen.kill_reason is None and grace > 0:
                self._retire(gen, KillReason.STOP, grace)  # an idle worker may exit by itself
            elif gen.phase is not Phase.LEAVING or grace <= 0:
                self._kill(gen, KillReason.STOP)  # one leaving already has its own grace
        self._check_finished()

    def on_reconfigured(self, e: Reconfigured) -> None:
        """Limits apply now; what a worker is spawned with applies to the next spawn."""
        lim = self.limits = e.limits
        self.policy.reconfigure(lim.max_backoff_s, lim.healthy_after_s, lim.max_restarts, lim.restart_window_s)
        for gen in self.generations.values():
            gen.new_limits(lim.inference_timeout_s, lim.heartbeat_interval_s, lim.heartbeat_timeout_s,
                           lim.stage_timeout_s)
            if gen.serving:
                self._arm_watchdog(gen)  # new limits may bring the deadline forward

    # --- rules -------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Spawn the current worker's successor (the first one, or after an exit)."""
        gen = self._new_generation()
        self.current = gen.number
        self._out.emit(Spawn(gen.number))

    def _new_generation(self) -> Generation:
        self.last_generation += 1
        lim = self.limits
        gen = Generation(self.last_generation, Watchdog(lim.inference_timeout_s, lim.heartbeat_timeout_s,
                                                        lim.stage_timeout_s),
                         lim.heartbeat_interval_s, lim.startup_timeout_s)
        self.generations[gen.number] = gen
        self.recycle_pending, self.recycle_overlaps = None, None  # this spawn reads the settings in force now
        return gen

    def _after_end(self, gen: Generation, reason: str, why: str, permanent: bool = False) -> None:
        """A worker is gone: restart it (at once, or after a backoff), or give up (at once
        when its start failed for good: `permanent`)."""
        if gen.number == self.next:
            self._next_ended(gen, why)  # a recycle that failed, or one superseded
            self._check_finished()
            return
        was_current = gen.number == self.current
        if was_current:
            self.current, self.measuring = None, None
        if not was_current or self.stopping:
            self._check_finished()
            return
        if permanent:
            self._give_up(f"the worker cannot run its model on this engine, and a restart would not mend it: {why}")
            return
        planned = gen.kill_reason is KillReason.RECYCLE
        delay = self.policy.after_exit(planned, gen.ran_for(self._now), self._now)
        if delay is None:
            self._give_up()
            return
        self.restarts += 0 if planned else 1
        label = RestartReason(reason)  # never a stop's reason: no restart follows a stop
        self._out.emit(CountRestart(label))
        self.machine.change(S.RESTARTING, "recycle" if planned else "worker exited")
        taker = self.next_generation if self.next_generation and not self.next_generation.kill_reason else None
        self._out.log(
            "info" if planned else "warning", "worker_restarting", reason=label.value,
            delay_s=0.0 if taker else delay, restarts=self.restarts, crashes_in_a_row=self.policy.crashes_in_a_row,
            crashes_in_window=self.policy.recent_crashes, next_generation=taker.number if taker else None,
        )
        if self._take_over_by_next():
            return
        if delay > 0:
            self._out.set_timer(Timer(TimerKind.BACKOFF), delay)
        else:
            self._spawn()

    def _give_up(self, why: str | None = None) -> None:
        why = why or (
            f"{self.policy.recent_crashes} unplanned worker exits within {self.limits.restart_window_s:g} s "
            f"(worker.max_restarts is {self.limits.max_restarts})"
        )
        self.machine.change(S.FAILED, why)
        self._drop_next()
        self._out.log("error", "worker_failed", why=why)
        self._out.emit(GiveUp(why))

    def _check_finished(self) -> None:
        if self.finished and self.state is not S.FAILED:  # FAILED stays: it says why the node goes
            self.machine.change(S.STOPPED, "supervisor stopping")

    def _retire(self, gen: Generation, reason: KillReason, grace_s: float) -> None:
        """Let an idle worker exit by itself (it frees the GPU cleanly); kill it otherwise."""
        if gen.phase is not Phase.IDLE:  # only a loaded, idle worker reads its socket
            self._kill(gen, reason)
            return
        gen.kill_reason = gen.kill_reason or reason
        gen.phase, gen.retire_grace_s = Phase.LEAVING, grace_s
        self._out.cancel_timer(Timer(TimerKind.WATCHDOG, gen.number))
        self._out.emit(Send(gen.number, Shutdown()))
        self._out.set_timer(Timer(TimerKind.RETIRE, gen.number), grace_s)

    def _abort(
        self, gen: Generation, result: JobResult, reason: KillReason, for_jobs: frozenset[str] | None = None,
    ) -> None:
        """Kill `gen`; its jobs end with `result` (only `for_jobs`, where given: the others
        as in any crash)."""
        if gen.abort_result is None:
            gen.abort_result, gen.abort_for = result, for_jobs
        self._kill(gen, reason)

    def _kill(self, gen: Generation, reason: KillReason) -> None:
        gen.kill_reason = gen.kill_reason or reason  # the first reason is the true one
        if gen.phase is Phase.SPAWNING:
            return  # killed as soon as it has a process
        if gen.number == self.current and not self.stopping and self.state in (S.STARTING, *SERVING):
            # Not ready from now on, not once the exit is seen: no job goes to it meanwhile.
            self.machine.change(S.RESTARTING, f"killing the worker ({reason.value})")
        gen.phase = Phase.LEAVING
        self._out.cancel_timers_of(gen.number)
        self._out.emit(Kill(gen.number, gen.kill_reason))

    def _watch(self, gen: Generation) -> None:
        verdict = gen.verdict(self._now)
        if verdict is None:
            self._arm_watchdog(gen)
            return
        # The job over its time fails `inference_timeout`; a silent worker, its job in the model
        # stage (the GPU's: where a whole process gets stuck), else every job it holds.
        culprit = verdict.job_id or (job.job_id if (job := gen.in_stage(Stage.MODEL)) else None)
        self._out.log("error", "worker_watchdog", pid=gen.pid, reason=verdict.reason.value,
                      job_id=culprit, jobs=list(gen.jobs), why=verdict.message)
        self._abort(gen, JobResult.failure("inference_timeout", verdict.message), verdict.reason,
                    frozenset({culprit}) if culprit is not None else None)

    def _arm_watchdog(self, gen: Generation) -> None:
        delay = gen.watch_in(self._now)
        gen.watch_due = self._now + delay
        self._out.set_timer(Timer(TimerKind.WATCHDOG, gen.number), delay)

    def _became_ready(self, gen: Generation) -> None:
        """`gen`, the current worker, serves now: what runs on the node is what it loaded."""
        assert gen.ready is not None
        self.last_ready = gen.ready
        self.machine.change(S.READY, "model loaded")
        self._out.emit(ReportReady(gen.number, gen.ready))
        if gen.recycle_asked_at is not None:  # a recycle with overlap, done
            self._out.emit(CountOverlap(OverlapResult.SWITCHED))

    def _show_model_stage(self, gen: Generation, why: str) -> None:
        """The node's worker state says whether a job is in the current worker's model stage
        (`busy`: the GPU is taken) or not (`ready`), whatever is preparing or finishing."""
        if gen.number != self.current or gen.kill_reason is not None or self.state not in SERVING:
            return
        self.machine.change(S.BUSY if gen.in_stage(Stage.MODEL) is not None else S.READY, why)

    def _set_state_of(self, gen: Generation, new: WorkerState, why: str) -> None:
        if gen.number == self.current:  # only the current worker's state is the node's
            self.machine.change(new, why)
