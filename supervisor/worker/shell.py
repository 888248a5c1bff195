"""The worker's shell: its processes, its ZeroMQ socket and its timers, around the pure
lifecycle core (`lifecycle.core`), which decides everything else.

Each spawn is a generation with its own ZeroMQ identity (`channel`), so a message
from a dead generation is recognised and dropped, and two live ones (the current worker and
the next, during a recycle with overlap) share the socket without mixing their messages.
Each exit is awaited, so a death is seen at once.

The core is fed one event at a time and its actions are done in order before the next event
(run to completion): what an action causes (a send that fails) is queued, never nested.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

from ipc.jsonlog import EventLog
from ipc.messages import Ready, WorkerSpec
from ipc.transport import endpoint_in
from supervisor.config import LoadedConfig
from supervisor.jobs.job import Job, JobResult
from supervisor.worker.generation import Phase
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.worker.lifecycle.events import (
    STOP_GRACE_S, AbortAsked, Action, CancelAsked, CancelTimer, CountOverlap, CountRestart, EndJob, Exited, GiveUp,
    JobOffered, Kill, Limits, Log, MeasureMemory, MemoryMeasured, Reconfigured, RecycleAsked, RefuseJob,
    ReportProgress, ReportReady, ReportStage, ReportState, Send, SendFailed, SendJob, SetTimer, Spawn, SpawnFailed,
    Spawned, Start, StopAsked, Timer, TimerFired,
)
from supervisor.worker.memory_probe import MemoryProbe
from supervisor.metrics.registry import Metrics
from supervisor.gpu.nvml import Nvml
from supervisor.worker.reasons import KillReason
from supervisor.tasks import report_bug, watched
from supervisor.worker.channel import WorkerChannel
from supervisor.worker.spawn import WORKER_COMMAND, kill_group, spawn, worker_environ, worker_spec
from supervisor.worker.state import SERVING, WorkerState
from supervisor.worker.wire import run_job

events = EventLog("supervisor.worker")


class WorkerUnavailable(Exception):
    """The worker cannot take a job right now; the job was not handed over."""


class Handover(NamedTuple):
    """A job handed to a worker: how it will end, and which worker runs it."""

    outcome: asyncio.Future  # resolves with the JobResult, also when the worker dies meanwhile
    pid: int | None
    model_version: str | None  # from that worker's Ready: what its callback reports
    # Resolves (with the model stage's milliseconds) when its model stage is over: the GPU
    # is free for the next job while this one finishes. Never, for a job that ends before.
    model_done: asyncio.Future


class WorkerSupervisor:
    def __init__(
        self,
        loaded: LoadedConfig,
        metrics: Metrics,
        runtime_dir: Path,
        command: Sequence[str] = WORKER_COMMAND,
        clock: Callable[[], float] = time.monotonic,
        probe: MemoryProbe | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.command = tuple(command)
        self.metrics = metrics
        self.endpoint = endpoint_in(runtime_dir)
        self.channel = WorkerChannel(self.endpoint, self._feed)
        self.core = Lifecycle(Limits.of(self.config.worker))
        # Measures memory for `worker.overlap: auto` (NVML for a CUDA worker: the node's).
        self.probe = probe or MemoryProbe(Nvml())
        self.on_ready: Callable[[Ready], None] | None = None
        # Called when a running job's progress changed (after the job records it).
        self.on_progress: Callable[[Job], None] = lambda job: None
        # Called when a job enters its model stage (after the job records it).
        self.on_model_started: Callable[[Job], None] = lambda job: None
        # Called if a background task of this class dies of a bug: the node cannot go on.
        self.on_fatal: Callable[[str], None] = lambda why: None
        # Called once the worker is given up for a crash loop (state FAILED).
        self.on_failed: Callable[[str], None] = lambda why: None
        self._clock = clock
        self._reader: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._finished = asyncio.Event()
        self._processes: dict[int, asyncio.subprocess.Process] = {}
        self._timers: dict[Timer, asyncio.TimerHandle] = {}
        self._jobs: dict[str, tuple[Job, asyncio.Future, asyncio.Future]] = {}  # handed over, until they end
        self._accepting = asyncio.Event()  # the core would hand a job offered now to the worker
        self._inbox: deque[Any] = deque()
        self._feeding = False
        self._do = {
            Spawn: self._spawn, Kill: self._kill, Send: self._send_message, SendJob: self._send_job,
            EndJob: self._end_job, RefuseJob: self._refuse_job, SetTimer: self._set_timer,
            CancelTimer: self._cancel_timer, ReportState: self._report_state, ReportReady: self._report_ready,
            CountRestart: self._count_restart, MeasureMemory: self._measure, CountOverlap: self._count_overlap,
            GiveUp: self._give_up, Log: self._log, ReportProgress: self._report_progress,
            ReportStage: self._report_stage,
        }

    # --- what the rest of the supervisor reads ------------------------------------

    @property
    def state(self) -> WorkerState:
        return self.core.state

    @property
    def pid(self) -> int | None:
        gen = self.core.worker
        return gen.pid if gen is not None else None

    @property
    def next_worker(self) -> dict[str, Any] | None:
        """The worker loading to replace the current one (a recycle with overlap), if any."""
        gen = self.core.next_generation
        if gen is None or gen.kill_reason is not None:
            return None  # none, or one being ended: it will never serve
        return {"state": "ready" if gen.phase is Phase.IDLE else "starting", "pid": gen.pid}

    @property
    def model_loaded(self) -> bool:
        return self.state in SERVING

    @property
    def last_ready(self) -> Ready | None:
        return self.core.last_ready

    @property
    def restarts(self) -> int:
        """Unplanned restarts so far (recycles are not counted)."""
        return self.core.restarts

    # --- what the node asks ----------------------------------------------------------

    async def start(self) -> None:
        self.channel.bind()
        self._reader = watched(self.channel.receive_forever(), "worker-reader", self.on_fatal)
        self._feed(Start())

    def stop_restarting(self) -> None:
        """From now on a worker that exits stays down (the node is stopping)."""
        self._feed(StopAsked())

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask an idle worker to exit, kill it otherwise (or if it does not), stop watching."""
        if self._reader is None:
            return  # never started
        self._feed(StopAsked(grace_s))
        await self._finished.wait()
        self._reader.cancel()
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self.channel.close()

    def abort(self, result: JobResult, why: str, reason: KillReason) -> None:
        """Kill the worker now; its running job (if any) ends with `result`."""
        self._feed(AbortAsked(result, why, reason))

    def recycle(self, why: str) -> None:
        """Replace the worker by a fresh one (new weights, new settings), not as a crash.

        With overlap (`worker.overlap`) the next worker loads while the current one serves,
        and takes over once ready and the current job is done. Without, the worker is
        replaced after its job; jobs that arrive meanwhile wait in the queue or get 503.
        """
        self._feed(RecycleAsked(why))

    def reconfigure(self, loaded: LoadedConfig) -> None:
        """Take a reloaded config: limits apply now, spawn settings at the next spawn."""
        self.loaded = loaded
        self.config = loaded.config
        self._feed(Reconfigured(Limits.of(self.config.worker)))

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def wait_accepting(self) -> None:
        """Until a job offered would be handed over: the worker serves, nothing is in its
        prepare stage, and it is not being replaced."""
        await self._accepting.wait()

    async def start_job(self, job: Job) -> Handover:
        """Hand `job` to the current worker. Raises WorkerUnavailable when the job could not
        be handed over (it is then still the caller's)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        model_done: asyncio.Future = loop.create_future()
        self._jobs[job.job_id] = (job, future, model_done)
        done = [a for a in self._feed(JobOffered(job.job_id)) if getattr(a, "job_id", None) == job.job_id]
        refused = [a for a in done if isinstance(a, RefuseJob)]
        if refused:
            self._jobs.pop(job.job_id, None)
            raise WorkerUnavailable(refused[0].why)
        (sent,) = [a for a in done if isinstance(a, SendJob)]
        gen = self.core.generations.get(sent.gen)
        ready = gen.ready if gen is not None else None
        return Handover(future, gen.pid if gen is not None else None, ready.model_version if ready else None,
                        model_done)

    async def cancel(self, job_id: str) -> bool:
        """Ask the worker to stop `job_id` at its backend's next step boundary; the job then
        ends through the usual result (`cancelled`). False if the worker does not hold it,
        or holds it past its model stage."""
        return any(isinstance(a, Send) for a in self._feed(CancelAsked(job_id)))

    # --- the core --------------------------------------------------------------------

    def _feed(self, event: Any) -> list[Action]:
        """Hand `event` to the core and do what it asks; what that causes is handled in turn.
        Returns every action done meanwhile."""
        self._inbox.append(event)
        if self._feeding:
            return []
        self._feeding = True
        done: list[Action] = []
        try:
            while self._inbox:
                actions = self.core.handle(self._inbox.popleft(), self._clock())
                for action in actions:
                    self._do[type(action)](action)
                done.extend(actions)
        finally:
            self._feeding = False
            self._inbox.clear()  # only left over when the core failed: the node is going down
        if self.core.finished:
            self._finished.set()
        if self.core.accepting:
            self._accepting.set()
        else:
            self._accepting.clear()
        return done

    # --- actions ---------------------------------------------------------------------

    def _spawn(self, action: Spawn) -> None:
        worker_id = self.channel.register(action.gen)
        spec = worker_spec(self.loaded, worker_id, self.endpoint)  # now: the settings in force when asked
        environ = worker_environ(self.config)
        watched(self._run_process(action.gen, spec, environ), f"worker-{action.gen}", self.on_fatal)

    async def _run_process(self, gen: int, spec: WorkerSpec, environ: dict[str, str]) -> None:
        """Spawn generation `gen`, then await its exit."""
        try:
            process = await spawn(self.command, spec, environ)
        except Exception as exc:  # fork failed, interpreter gone mid-deploy...: retried after the backoff
            events.exception("worker_spawn_failed")
            self.channel.forget(gen)
            self._feed(SpawnFailed(gen, f"{type(exc).__name__}: {exc}"))
            return
        self._processes[gen] = process
        self._feed(Spawned(gen, process.pid, spec.worker_id))
        returncode = await process.wait()
        kill_group(process.pid)  # anything the worker left in its group goes with it
        self._processes.pop(gen, None)
        self.channel.forget(gen)
        self._feed(Exited(gen, returncode))

    def _kill(self, action: Kill) -> None:
        process = self._processes.get(action.gen)
        if process is not None and process.returncode is None:  # never a reaped pid: it may be reused
            kill_group(process.pid)

    def _send_message(self, action: Send) -> None:
        self.channel.send(action.gen, action.message)  # a failure is logged; the worker's exit says the rest

    def _send_job(self, action: SendJob) -> None:
        job = self._jobs[action.job_id][0]
        error = self.channel.send(action.gen, *run_job(job))
        if error is not None:
            self._inbox.append(SendFailed(action.gen, action.job_id, error))

    def _end_job(self, action: EndJob) -> None:
        entry = self._jobs.pop(action.job_id, None)
        if entry is not None and not entry[1].done():
            entry[1].set_result(action.result)

    def _report_progress(self, action: ReportProgress) -> None:
        entry = self._jobs.get(action.job_id)
        if entry is not None and not entry[1].done():
            entry[0].mark_progress(action.step, action.total)
            self.on_progress(entry[0])

    def _report_stage(self, action: ReportStage) -> None:
        entry = self._jobs.get(action.job_id)
        if entry is None or entry[1].done():
            return
        job, _, model_done = entry
        now = self._clock()
        if action.stage == "prepared":
            job.mark_prepared(action.ms)
        elif action.stage == "model_started":
            first = job.model_started_mono is None
            job.mark_model_started(now)
            if first:
                self.metrics.job_queue.observe(now - job.accepted_mono)
            self.on_model_started(job)
        elif action.stage == "model_done":
            job.mark_model_done(now, action.ms)
            self.metrics.model_busy.inc(action.ms / 1000)
            if not model_done.done():
                model_done.set_result(action.ms)

    def _refuse_job(self, action: RefuseJob) -> None:
        pass  # start_job reads it from what _feed returns

    def _set_timer(self, action: SetTimer) -> None:
        self._cancel_timer(CancelTimer(action.timer))
        loop = asyncio.get_running_loop()
        self._timers[action.timer] = loop.call_later(max(action.delay_s, 0.0), self._fire, action.timer)

    def _cancel_timer(self, action: CancelTimer) -> None:
        handle = self._timers.pop(action.timer, None)
        if handle is not None:
            handle.cancel()

    def _fire(self, timer: Timer) -> None:
        self._timers.pop(timer, None)
        try:
            self._feed(TimerFired(timer))
        except Exception as exc:  # a bug in a timer's handling must not pass unseen
            report_bug(f"worker-timer-{timer.kind.value}", exc, self.on_fatal)

    def _report_state(self, action: ReportState) -> None:
        if action.new is WorkerState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        events.info("worker_state", state=action.new.value, previous=action.old.value, why=action.why)

    def _report_ready(self, action: ReportReady) -> None:
        if self.on_ready is not None:
            self.on_ready(action.ready)  # type: ignore[arg-type]

    def _count_restart(self, action: CountRestart) -> None:
        self.metrics.worker_restarts.labels(action.reason.value).inc()

    def _measure(self, action: MeasureMemory) -> None:
        watched(self._measure_memory(action), f"worker-{action.gen}-memory", self.on_fatal)

    async def _measure_memory(self, action: MeasureMemory) -> None:
        # NVML and /proc block: off the event loop. The worker serves on meanwhile.
        figures = await asyncio.to_thread(self.probe.measure, action.pid, action.device)
        self._feed(MemoryMeasured(action.gen, figures))

    def _count_overlap(self, action: CountOverlap) -> None:
        self.metrics.worker_overlap.labels(action.result.value).inc()

    def _give_up(self, action: GiveUp) -> None:
        self.on_failed(action.why)

    def _log(self, action: Log) -> None:
        getattr(events, action.level)(action.event, **action.fields)
