"""Spawning, watching and restarting the GPU worker process, and talking to it.

One worker at a time, each spawn a new "generation" with its own ZeroMQ identity, so a
message from a dead generation is recognised and dropped. The worker runs in its own
process group (and session): killing the group leaves nothing behind, and a Ctrl-C on
the supervisor's terminal reaches only the supervisor, which then drains.

A worker ends in one of three ways: unplanned (it exited, a signal killed it, or the
watchdog did), counted against the crash-loop limit and restarted after a backoff;
recycled on request (USR1, a reloaded config), after its current job, restarted at
once and not counted; or stopped with the node.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import zmq
import zmq.asyncio

from ipc import codec
from ipc.jsonlog import EventLog
from ipc.messages import (
    PROTOCOL_VERSION,
    SPEC_ENV,
    CancelJob,
    Heartbeat,
    Hello,
    JobFailed,
    JobSucceeded,
    Ready,
    RunJob,
    Shutdown,
    StartupFailed,
    WorkerSpec,
    encode_spec,
)
from ipc.transport import endpoint_in
from supervisor.config import LoadedConfig
from supervisor.jobs import Job, JobResult
from supervisor.metrics import Metrics
from supervisor.watchdog import Watchdog
from supervisor.worker_state import (
    SERVING,
    RestartPolicy,
    StateMachine,
    WorkerState,
    describe_exit,
)

events = EventLog("supervisor.worker")
STOP_GRACE_S = 5.0
WATCH_PERIOD_S = 0.5


class WorkerUnavailable(Exception):
    """The worker cannot take a job right now; the job was not handed over."""


@dataclass(eq=False)
class Generation:
    number: int
    worker_id: str
    process: asyncio.subprocess.Process
    started: float
    exited: asyncio.Future
    ready_at: float | None = None
    startup_failure: StartupFailed | None = None
    running: tuple[str, asyncio.Future] | None = None
    # Monotonic times the watchdog reads: the last message of any kind, the job's handover.
    last_heard: float = 0.0
    job_started: float | None = None
    # Its own limits: the heartbeat timeout must fit the interval this worker beats at.
    watchdog: Watchdog | None = None
    heartbeat_interval_s: float = 0.0
    # Set when we kill it on purpose: the restart reason, and how its running job ends.
    kill_reason: str | None = None
    abort_result: JobResult | None = None
    identity: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.identity = self.worker_id.encode()
        self.last_heard = self.started

    @property
    def alive(self) -> bool:
        return self.process.returncode is None and self.kill_reason is None

    @property
    def pid(self) -> int:
        return self.process.pid


WORKER_COMMAND = (sys.executable, "-m", "gpu_worker")


class WorkerSupervisor:
    def __init__(
        self,
        loaded: LoadedConfig,
        metrics: Metrics,
        runtime_dir: Path,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.loaded = loaded
        self.command = tuple(command)
        self.config = loaded.config
        self.metrics = metrics
        self.endpoint = endpoint_in(runtime_dir)
        self.machine = StateMachine(self._on_state_change)
        worker_cfg = self.config.worker
        self.policy = RestartPolicy(
            worker_cfg.max_backoff_s, worker_cfg.healthy_after_s,
            worker_cfg.max_restarts, worker_cfg.restart_window_s,
        )
        self.restarts = 0
        # Why a recycle was asked for, until it happens (after the current job).
        self._recycle_pending: str | None = None
        # The last Ready seen: what runs (or ran) on this node, kept across restarts.
        self.last_ready: Ready | None = None
        self.on_ready: Callable[[Ready], None] | None = None
        # Called if a background task of this class dies of a bug: the node cannot go on.
        self.on_fatal: Callable[[str], None] = lambda why: None
        # Called once the worker is given up for a crash loop (state FAILED).
        self.on_failed: Callable[[str], None] = lambda why: None
        self._gen: Generation | None = None
        self._generation_count = 0
        self._ctx = zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket | None = None
        self._decoder = codec.worker_message_decoder()
        self._ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # --- what the rest of the supervisor reads ------------------------------------

    @property
    def state(self) -> WorkerState:
        return self.machine.state

    @property
    def pid(self) -> int | None:
        gen = self._gen
        return gen.pid if gen is not None and gen.process.returncode is None else None

    @property
    def model_loaded(self) -> bool:
        return self.state in SERVING

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        sock = self._ctx.socket(zmq.ROUTER)
        # Sending to a worker that is gone raises instead of dropping the job silently.
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(self.endpoint)
        self._sock = sock
        self._tasks = [
            watched(self._read_loop(), "worker-reader", self.on_fatal),
            watched(self._lifecycle(), "worker-lifecycle", self.on_fatal),
        ]

    def stop_restarting(self) -> None:
        """From now on a worker that exits stays down (the node is stopping)."""
        self._stopping.set()

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask an idle worker to exit, kill it otherwise (or if it does not), stop watching."""
        self.stop_restarting()
        gen = self._gen
        if gen is not None and self.state is WorkerState.READY and grace_s > 0:
            # Only an idle, loaded worker reads its socket; anything else is killed.
            await self._send(gen, Shutdown())
            try:
                await asyncio.wait_for(asyncio.shield(gen.exited), grace_s)
            except asyncio.TimeoutError:
                events.warning("worker_stop_timeout", pid=gen.pid, grace_s=grace_s)
        # The lifecycle ends once no worker is alive; a worker spawned meanwhile is killed.
        lifecycle = self._tasks[1]
        while not lifecycle.done():
            gen = self._gen
            if gen is not None:
                self._kill(gen, "stop")
            await asyncio.wait({lifecycle}, timeout=0.5)
        self._tasks[0].cancel()
        if self._sock is not None:
            self._sock.close(linger=0)
        self._ctx.term()

    def abort(self, result: JobResult, why: str, reason: str = "watchdog") -> None:
        """Kill the worker now; its running job (if any) ends with `result`.

        `reason` is the restart reason it is counted under, should it be restarted.
        """
        gen = self._gen
        if gen is None or gen.process.returncode is not None:
            return
        gen.abort_result = result
        events.warning("worker_abort", pid=gen.pid, why=why)
        self._kill(gen, reason)

    def recycle(self, why: str) -> None:
        """Replace the worker by a fresh one once it is idle (new weights, new settings).

        A busy worker finishes its job first; jobs that arrive meanwhile wait in the queue.
        Not a crash: it is restarted at once and not counted against the crash-loop limit.
        """
        self._recycle_pending = why
        events.info("worker_recycle_requested", why=why, state=self.state.value)
        self._maybe_recycle()

    def reconfigure(self, loaded: LoadedConfig) -> None:
        """Take a reloaded config: limits apply now, spawn settings at the next spawn."""
        self.loaded = loaded
        self.config = loaded.config
        w = self.config.worker
        self.policy.reconfigure(w.max_backoff_s, w.healthy_after_s, w.max_restarts, w.restart_window_s)
        gen = self._gen
        if gen is not None and gen.watchdog is not None:
            # A worker spawned with another heartbeat interval keeps its heartbeat timeout
            # until it is recycled: the new one may be shorter than the beats it sends.
            same_beat = w.heartbeat_interval_s == gen.heartbeat_interval_s
            gen.watchdog = Watchdog(
                w.inference_timeout_s,
                w.heartbeat_timeout_s if same_beat else gen.watchdog.heartbeat_timeout_s,
            )

    async def wait_ready(self) -> None:
        await self._ready.wait()

    async def start_job(self, job: Job) -> asyncio.Future:
        """Hand `job` to the worker. The returned future resolves with how the job ended,
        also when the worker dies or is aborted meanwhile. Raises WorkerUnavailable when
        the job could not be handed over (it is then still the caller's)."""
        gen = self._gen
        if gen is None or self.state is not WorkerState.READY or not gen.alive:
            raise WorkerUnavailable("the worker is not ready")
        assert job.person_image is not None and job.garment_image is not None
        options = job.options
        assert options.seed is not None and options.output_format is not None  # resolved at admission
        message = RunJob(
            job_id=job.job_id,
            seed=options.seed,
            output_format=options.output_format,
            steps=options.steps,
            prompt=options.prompt,
        )
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # Set before the send: a death during the send resolves the future.
        gen.running = (job.job_id, future)
        gen.job_started = time.monotonic()
        self.machine.change(WorkerState.BUSY, f"job {job.job_id}")
        if not await self._send(gen, message, job.person_image, job.garment_image):
            # The worker's socket is gone: it is dead or dying. The job never reached it.
            if gen.running is not None and gen.running[1] is future:
                gen.running = None
            self.abort(JobResult.failure("worker_crashed", "unreachable"), "the worker's socket is gone")
            raise WorkerUnavailable("the worker could not be reached")
        return future

    async def cancel(self, job_id: str) -> bool:
        """Ask the worker to stop `job_id` at its backend's next step boundary; the job then
        ends through the usual result (`cancelled`). False if the worker does not hold it."""
        gen = self._gen
        if gen is None or gen.running is None or gen.running[0] != job_id:
            return False
        events.info("job_cancel_sent", pid=gen.pid, job_id=job_id)
        await self._send(gen, CancelJob(job_id=job_id))  # a dead worker ends the job anyway
        return True

    # --- internals ------------------------------------------------------------------

    async def _lifecycle(self) -> None:
        while not self._stopping.is_set():
            gen, exit_reason, ran_for = await self._run_generation()
            if self._stopping.is_set():
                break
            planned = gen is not None and gen.kill_reason == "recycle"
            if planned:
                delay = 0.0
                self.policy.note_run(ran_for)
            elif self.policy.record_crash(time.monotonic()):
                self._give_up()
                await self._stopping.wait()
                return  # still FAILED: /health says why the node is going
            else:
                delay = self.policy.next_delay(ran_for)
            self.restarts += 1
            self.metrics.worker_restarts.labels(exit_reason).inc()
            self.machine.change(WorkerState.RESTARTING, "recycle" if planned else "worker exited")
            events.warning(
                "worker_restarting", reason=exit_reason, delay_s=delay, restarts=self.restarts,
                crashes_in_a_row=self.policy.crashes_in_a_row,
                crashes_in_window=self.policy.recent_crashes,
            )
            try:
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass
        self.machine.change(WorkerState.STOPPED, "supervisor stopping")

    def _give_up(self) -> None:
        w = self.config.worker
        why = (
            f"{self.policy.recent_crashes} unplanned worker exits within {w.restart_window_s:g} s "
            f"(worker.max_restarts is {w.max_restarts})"
        )
        self.machine.change(WorkerState.FAILED, why)
        events.error("worker_failed", why=why)
        self.on_failed(why)

    async def _run_generation(self) -> tuple[Generation | None, str, float]:
        """Spawn one worker and watch it until it is gone: the generation, the restart
        reason, and how long it ran after ready."""
        try:
            gen = await self._spawn()
        except Exception:  # fork failed, interpreter gone mid-deploy...: retried after the backoff
            events.exception("worker_spawn_failed")
            return None, "exit", 0.0
        await self._await_startup(gen)
        if gen.ready_at is not None:
            await self._watch(gen)
        await gen.exited
        reason = self._on_exit(gen)
        return gen, reason, time.monotonic() - (gen.ready_at or gen.started)

    async def _watch(self, gen: Generation) -> None:
        """Until the worker exits: kill it when the watchdog says so."""
        while gen.alive:
            now = time.monotonic()
            assert gen.watchdog is not None
            verdict = gen.watchdog.check(now, gen.last_heard, gen.job_started)
            if verdict is not None:
                job_id = gen.running[0] if gen.running is not None else None
                events.error("worker_watchdog", pid=gen.pid, reason=verdict.reason, job_id=job_id, why=verdict.message)
                self.abort(JobResult.failure("inference_timeout", verdict.message), verdict.message, verdict.reason)
                return
            # Capped: a job handed over or new limits reloaded meanwhile may bring the
            # deadline forward, and a check costs nothing.
            timeout = min(gen.watchdog.next_check_in(now, gen.last_heard, gen.job_started), WATCH_PERIOD_S)
            await asyncio.wait({gen.exited}, timeout=timeout)

    async def _spawn(self) -> Generation:
        # This spawn reads the current config: a recycle asked before now is served by it.
        self._recycle_pending = None
        self._generation_count += 1
        number = self._generation_count
        worker_id = f"w{number}-{secrets.token_hex(4)}"
        cfg = self.config
        spec = WorkerSpec(
            worker_id=worker_id,
            endpoint=self.endpoint,
            parent_pid=os.getpid(),
            node_id=cfg.node_id,
            backend=cfg.worker.backend,
            device=cfg.worker.device,
            heartbeat_interval_s=cfg.worker.heartbeat_interval_s,
            max_pixels=cfg.images.max_pixels,
            log_level=cfg.logging.level,
            model_version=cfg.model.version,
            backend_settings=cfg.backend_settings(),
            config_dir=str(self.loaded.base_dir),
        )
        env = dict(os.environ)
        env[SPEC_ENV] = encode_spec(spec)
        env["PYTHONUNBUFFERED"] = "1"
        process = await asyncio.create_subprocess_exec(
            *self.command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # own process group; no terminal signals
        )
        gen = Generation(
            number=number,
            worker_id=worker_id,
            process=process,
            started=time.monotonic(),
            exited=asyncio.ensure_future(process.wait()),
            watchdog=Watchdog(cfg.worker.inference_timeout_s, cfg.worker.heartbeat_timeout_s),
            heartbeat_interval_s=cfg.worker.heartbeat_interval_s,
        )
        self._gen = gen
        self.machine.change(WorkerState.STARTING, f"spawned pid {process.pid}")
        events.info("worker_started", pid=process.pid, worker_id=worker_id, generation=number)
        return gen

    async def _await_startup(self, gen: Generation) -> None:
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            done, _ = await asyncio.wait(
                {ready, gen.exited},
                timeout=self.config.worker.startup_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
        if not done:
            events.error(
                "worker_startup_timeout", pid=gen.pid,
                startup_timeout_s=self.config.worker.startup_timeout_s,
            )
            self._kill(gen, "watchdog")

    def _on_exit(self, gen: Generation) -> str:
        returncode = gen.process.returncode
        assert returncode is not None
        _killpg(gen.pid)  # anything the worker left in its group goes with it
        decoded = describe_exit(returncode)
        reason = gen.kill_reason or decoded.reason
        fields: dict = {}
        if gen.startup_failure is not None:
            fields["startup_failure"] = gen.startup_failure.reason
            fields["startup_message"] = gen.startup_failure.message
        stopping = self._stopping.is_set() and gen.kill_reason in (None, "stop")
        stopping = stopping or gen.kill_reason == "recycle"  # asked for: not an error
        (events.info if stopping else events.error)(
            "worker_exited", pid=gen.pid, returncode=returncode, reason=reason,
            description=decoded.description, generation=gen.number, **fields,
        )
        if gen.running is not None:
            job_id, future = gen.running
            gen.running = None
            result = gen.abort_result or JobResult.failure(
                "worker_crashed", f"the worker process died during the job: {decoded.description}"
            )
            if not future.done():
                future.set_result(result)
        if self._gen is gen:
            self._gen = None
        return reason

    def _maybe_recycle(self, job_done: bool = False) -> None:
        """Recycle now if one is pending and the worker holds no job."""
        gen = self._gen
        if self._recycle_pending is None or gen is None or not gen.alive:
            return  # none asked, or between workers: the next spawn reads the current config
        if self.state is WorkerState.BUSY and not job_done:
            return  # after the job: `_finish_job` calls again
        gen.kill_reason = "recycle"
        self.machine.change(WorkerState.RESTARTING, f"recycle: {self._recycle_pending}")
        watched(self._retire(gen), "worker-retire", self.on_fatal)

    async def _retire(self, gen: Generation) -> None:
        """Let an idle worker exit by itself (it frees the GPU cleanly), kill it otherwise."""
        if gen.ready_at is not None:  # only the I/O loop of a loaded worker reads its socket
            await self._send(gen, Shutdown())
            done, _ = await asyncio.wait({gen.exited}, timeout=STOP_GRACE_S)
            if done:
                return
            events.warning("worker_stop_timeout", pid=gen.pid, grace_s=STOP_GRACE_S)
        _killpg(gen.pid)

    def _kill(self, gen: Generation, reason: str) -> None:
        if gen.kill_reason is None:
            gen.kill_reason = reason
        if not self._stopping.is_set() and self.state in (WorkerState.STARTING, *SERVING):
            # Not ready from now on, not when the exit is reaped: no job goes to it meanwhile.
            self.machine.change(WorkerState.RESTARTING, f"killing the worker ({reason})")
        _killpg(gen.pid)

    async def _send(self, gen: Generation, message, *blobs: bytes) -> bool:
        assert self._sock is not None
        try:
            await self._sock.send_multipart([gen.identity, *codec.encode(message, *blobs)], copy=False)
            return True
        except zmq.ZMQError as exc:
            events.warning("worker_send_failed", pid=gen.pid, message=type(message).__name__, error=str(exc))
            return False

    async def _read_loop(self) -> None:
        assert self._sock is not None
        while True:
            frames = await self._sock.recv_multipart(copy=False)
            gen = self._gen
            if gen is None or frames[0].bytes != gen.identity:
                events.debug("worker_message_dropped", identity=frames[0].bytes.decode(errors="replace"))
                continue
            gen.last_heard = time.monotonic()
            try:
                message, blobs = self._decoder.decode(frames[1:])
                self._handle(gen, message, blobs)
            except Exception as exc:
                # A message we cannot understand or handle: the worker and we are out of
                # step, and a job waiting on it would wait forever. Start over.
                events.exception("worker_protocol_error", pid=gen.pid, error=str(exc))
                self.abort(
                    JobResult.failure("backend_error", f"the worker sent a message that could not be handled: {exc}"),
                    "protocol error",
                )
            del frames  # no image kept alive until the next message

    def _handle(self, gen: Generation, message, blobs: list) -> None:
        if isinstance(message, Heartbeat):
            pass  # proof of life; nothing reads it until a watchdog does
        elif isinstance(message, (JobSucceeded, JobFailed)):
            self._finish_job(gen, message, blobs)
        elif isinstance(message, Hello):
            if message.protocol != PROTOCOL_VERSION:
                events.error(
                    "worker_protocol_mismatch", pid=gen.pid,
                    worker_protocol=message.protocol, supervisor_protocol=PROTOCOL_VERSION,
                )
                self._kill(gen, "exit")
        elif isinstance(message, Ready):
            if gen.kill_reason is not None:
                return  # ready too late: it is being killed (startup timeout)
            self.last_ready = message
            gen.ready_at = time.monotonic()
            self.machine.change(WorkerState.READY, "model loaded")
            events.info(
                "worker_ready", pid=gen.pid, backend=message.backend, device=message.device,
                model_version=message.model_version, torch=message.torch_version,
                comfyui=message.comfyui_version, load_time_s=round(message.load_time_s, 3),
                startup_s=round(gen.ready_at - gen.started, 3),
            )
            if self.on_ready is not None:
                self.on_ready(message)
        elif isinstance(message, StartupFailed):
            gen.startup_failure = message
            events.error("worker_startup_failed", pid=gen.pid, reason=message.reason, error=message.message)

    def _finish_job(self, gen: Generation, message: JobSucceeded | JobFailed, blobs: list) -> None:
        if gen.running is None or gen.running[0] != message.job_id:
            events.warning("worker_result_unexpected", pid=gen.pid, job_id=message.job_id)
            return
        _, future = gen.running
        gen.running = None
        gen.job_started = None
        if isinstance(message, JobSucceeded):
            result = JobResult(
                image=codec.frame_bytes(blobs[0]),
                content_type=message.content_type,
                inference_ms=message.inference_ms,
            )
        else:
            result = JobResult.failure(message.error_code, message.message, message.inference_ms)
        if not future.done():
            future.set_result(result)
        if gen.kill_reason is not None:
            return  # a result that raced its kill: the worker is going, not ready
        if self._recycle_pending is not None:
            self._maybe_recycle(job_done=True)  # straight on: no job is handed to it meanwhile
        else:
            self.machine.change(WorkerState.READY, f"job {message.job_id} done")

    def _on_state_change(self, old: WorkerState, new: WorkerState, why: str) -> None:
        if new is WorkerState.READY:
            self._ready.set()
        else:
            self._ready.clear()
        events.info("worker_state", state=new.value, previous=old.value, why=why)


def watched(coro, name: str, on_fatal: Callable[[str], None]) -> asyncio.Task:
    """A background task whose death by an exception is logged and reported, never silent."""
    task = asyncio.get_running_loop().create_task(coro, name=name)

    def done(t: asyncio.Task) -> None:
        if t.cancelled() or t.exception() is None:
            return
        exc = t.exception()
        events.error(
            "internal_error", task=name, exc_type=type(exc).__name__, error=str(exc),
            traceback="".join(traceback.format_exception(exc)).rstrip(),
        )
        on_fatal(f"task {name} failed: {type(exc).__name__}: {exc}")

    task.add_done_callback(done)
    return task


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
