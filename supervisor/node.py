"""The node: wires the parts together and runs them from start to a clean stop.

Signal handlers only put the signal on a queue; the main coroutine does the work
(`handle_<signal>` methods, dispatched by name): TERM/INT drain, HUP reloads the config
and rescans the spool,
USR1 recycles the worker, QUIT stops now. A background task that dies of a bug puts
FATAL on the same queue: the node then stops at once and exits 1, so that systemd or
Kubernetes restart it, rather than limping on without a dispatcher. A worker that cannot
be kept running (a crash loop) puts WORKER_FAILED there: drain, exit 3.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from ipc import jsonlog
from ipc.jsonlog import EventLog
from ipc.messages import Ready
from ipc.transport import make_runtime_dir, remove_runtime_dir, remove_stale_runtime_dirs
from supervisor import build_info
from supervisor.jobs.admission import Admission
from supervisor.http.app import create_app, declare_http1_only
from supervisor.http.auth import TokenSet
from supervisor.delivery.callback import CallbackSender
from supervisor import config as config_module
from supervisor.config import LoadedConfig
from supervisor.jobs.dispatcher import Dispatcher
from supervisor.delivery.events import EventSender
from supervisor.metrics.gpu_collector import GpuCollector
from supervisor.gpu.selection import GpuRef, worker_gpus
from supervisor.http.deadlines import DeadlineProtocol, close_connections
from supervisor.jobs.job import JobResult, JobStore
from supervisor.http.jobs_api import JobsApi
from supervisor.worker.memory_probe import MemoryProbe
from supervisor.metrics.registry import Metrics
from supervisor.gpu.nvml import Nvml
from supervisor.worker.reasons import KillReason
from supervisor.reload import plan_reload
from supervisor.jobs.scheduler import Scheduler
from supervisor.delivery.spool import Spool, SpoolUnusable
from supervisor.http.status import readiness
from supervisor.tasks import watched
from supervisor.metrics.worker_collector import WorkerProcessCollector
from supervisor.worker.shell import WorkerSupervisor

events = EventLog("supervisor.node")
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT)
# Signals that do not stop the node: ignored (logged) while it is already stopping.
NON_STOPPING = (signal.SIGHUP, signal.SIGUSR1)
FATAL = "fatal"
WORKER_FAILED = "worker_failed"
EXIT_INTERNAL_ERROR = 1
EXIT_WORKER_FAILED = 3


class Node:
    def __init__(self, loaded: LoadedConfig, runtime_dir: Path | None = None) -> None:
        self.loaded = loaded
        cfg = self.config = loaded.config
        self.version = build_info.version()
        self.git_commit = build_info.git_commit()
        self.metrics = Metrics()
        self.tokens = TokenSet(cfg.auth.tokens)
        self.metrics_tokens = TokenSet([cfg.metrics.token] if cfg.metrics.token else [])
        self.jobs = JobStore(cfg.jobs.retention_s)
        self.scheduler = Scheduler(cfg.queue.max_pending)
        if runtime_dir is None:
            # A node killed before it could clean up (SIGKILL, a crash) left its own.
            for stale in remove_stale_runtime_dirs():
                events.info("runtime_dir_removed", dir=str(stale), why="its node is gone")
        self.runtime_dir = runtime_dir or make_runtime_dir()
        # NVML (started in run()): GPU figures for /metrics and /gpu/status, and the memory
        # a recycle's overlap decision weighs.
        self.nvml = Nvml()
        self.worker = WorkerSupervisor(loaded, self.metrics, self.runtime_dir, probe=MemoryProbe(self.nvml))
        self.worker.on_ready = self._on_worker_ready
        self.worker.on_fatal = self._fatal
        self.worker.on_failed = lambda why: self._stop_requests.put_nowait(WORKER_FAILED)
        self.spool = Spool(loaded.spool_dir, on_quarantine=self.metrics.spool_quarantined.inc)
        self.callbacks = CallbackSender(cfg.callback, cfg.node_id, self.metrics, self.spool, cfg.spool)
        self.job_events = EventSender(cfg.events, cfg.callback, cfg.node_id, self.metrics)
        self.worker.on_progress = self.job_events.progress
        self.dispatcher = Dispatcher(
            self.scheduler, self.worker, self.callbacks, self.metrics, cfg.model.version,
            cfg.worker.retry_crashed_jobs, self.job_events,
        )
        self.worker.on_model_started = self.dispatcher.model_started
        self.dispatcher.on_fatal = self._fatal
        self.admission = Admission(
            cfg, self.jobs, self.scheduler, self.metrics, self.readiness, self.dispatcher.wake, self.spool.holds
        )
        self.jobs_api = JobsApi(self.jobs, self.callbacks, self.scheduler, self.dispatcher, self.worker)
        self.draining = False
        # Set once the worker is given up (crash loop): the node then exits 3, not 0.
        self.worker_failed = False
        self._stop_requests: asyncio.Queue[signal.Signals | str] = asyncio.Queue()
        self.metrics.bind_state(
            busy=lambda: self.scheduler.busy,
            queue_length=lambda: self.scheduler.queue_length,
            worker_pid=lambda: self.worker.pid,
            model_loaded=lambda: self.worker.model_loaded,
            # From the folders (the scrape runs in a thread): what `spool list` shows.
            spool_pending=self.spool.waiting_on_disk,
            spool_dead=self.spool.dead_on_disk,
        )
        self._set_build_info(cfg.model.version or "")
        # The worker process's memory and CPU (psutil), and GPU figures from NVML (for
        # /metrics and /gpu/status), read at scrape time.
        self.metrics.registry.register(WorkerProcessCollector(lambda: self.worker.pid))
        self.metrics.registry.register(GpuCollector(self.nvml, self.worker_gpus))
        self.app = create_app(self)

    def readiness(self) -> str:
        return readiness(self.worker.state, self.draining)

    def worker_failed_result(self) -> JobResult:
        return JobResult.failure("shutdown", "the worker cannot be kept running (crash loop); the node is stopping")

    def worker_gpus(self) -> list[GpuRef]:
        """The GPU the worker computes on: the device it reported once ready, else the configured one."""
        ready = self.worker.last_ready
        device = ready.device if ready is not None else self.config.worker.device
        return worker_gpus(device, os.environ.get("CUDA_VISIBLE_DEVICES"))

    async def run(self) -> int:
        cfg = self.config
        loop = asyncio.get_running_loop()
        for signum in HANDLED_SIGNALS:
            loop.add_signal_handler(signum, self._stop_requests.put_nowait, signum)
        if not self._open_spool():
            remove_runtime_dir(self.runtime_dir)
            return EXIT_INTERNAL_ERROR
        try:
            server = await self.app.create_server(
                cfg.server.host, cfg.server.port, access_log=False, return_asyncio_server=True, backlog=1024,
                protocol=DeadlineProtocol,
            )
        except OSError as exc:
            events.error("startup_failed", error=f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc}")
            remove_runtime_dir(self.runtime_dir)
            return 1
        assert server is not None
        dispatcher = None
        self.nvml.start()
        try:
            declare_http1_only(self.app, cfg.server.port)
            await server.startup()
            events.info(
                "node_started", host=cfg.server.host, port=cfg.server.port, pid=os.getpid(),
                version=self.version, git_commit=self.git_commit, backend=cfg.worker.backend,
                config=str(self.loaded.path),
            )
            await self.callbacks.start()
            await self.job_events.start()
            await self.worker.start()
            dispatcher = watched(self.dispatcher.run(), "dispatcher", self._fatal)
            while True:
                request = await self._stop_requests.get()
                if request == FATAL:
                    await self._drain("internal error", drain_s=0.0)
                    return EXIT_INTERNAL_ERROR
                if request == WORKER_FAILED:
                    # Nothing queued can run: end it now, give the callbacks the drain's time.
                    self.worker_failed = True
                    self._end_unfinished(self.worker_failed_result(), KillReason.STOP)
                    return await self._drain("worker failed", self.config.shutdown.drain_timeout_s)
                assert isinstance(request, signal.Signals)
                handler = getattr(self, f"handle_{request.name.removeprefix('SIG').lower()}")
                exit_code = await handler()
                if exit_code is not None:
                    return exit_code
        finally:
            if dispatcher is not None:
                dispatcher.cancel()
            await self.job_events.close()
            server.close()
            await server.wait_closed()
            await close_connections(server.connections)
            remove_runtime_dir(self.runtime_dir)
            self.nvml.close()
            events.info("node_stopped")

    def _open_spool(self) -> bool:
        """Refuse to start on a spool that cannot take a write: jobs accepted then would
        have nowhere safe for their results."""
        try:
            loaded = self.spool.open()
        except SpoolUnusable as exc:
            message = f"spool.dir: cannot use the spool folder: {exc}"
            events.error("startup_failed", error=message)
            print(f"gpu-server: {message}", file=sys.stderr)
            return False
        events.info("spool_opened", dir=str(self.spool.root), pending=len(loaded))
        return True

    def _fatal(self, why: str) -> None:
        events.error("node_failing", why=why)
        self._stop_requests.put_nowait(FATAL)

    # --- signals -------------------------------------------------------------------

    async def handle_term(self) -> int:
        return await self._drain("SIGTERM", self.config.shutdown.drain_timeout_s)

    async def handle_int(self) -> int:
        return await self._drain("SIGINT", self.config.shutdown.drain_timeout_s)

    async def handle_quit(self) -> int:
        """Stop now: unfinished jobs end with `shutdown`, their results are not waited for."""
        events.info("shutdown_started", signal="SIGQUIT", drain_timeout_s=0)
        self.draining = True
        self.job_events.drain()
        self._end_unfinished(
            JobResult.failure("shutdown", "the node was stopped at once (SIGQUIT)"), KillReason.QUIT
        )
        # The running job is recorded once its killed worker is seen gone (milliseconds).
        idle = asyncio.ensure_future(self.dispatcher.wait_idle())
        if not (await asyncio.wait({idle}, timeout=10.0))[0]:
            idle.cancel()
            events.error("shutdown_jobs_unsettled")
        await self.callbacks.close(0.0)
        await self.worker.stop(grace_s=0.0)
        return 0

    async def handle_usr1(self) -> None:
        self.worker.recycle("SIGUSR1")

    async def handle_hup(self) -> None:
        """Reload the config file (a bad file changes nothing), then look for dead letters
        replayed into the spool: they go out with the settings just reloaded (a fixed
        callback.url, say)."""
        self._reload_config()
        await self.callbacks.rescan("SIGHUP")

    def _reload_config(self) -> None:
        try:
            loaded = config_module.load(self.loaded.path)
        except config_module.ConfigError as exc:
            events.error("config_reload_failed", config=str(self.loaded.path), problems=exc.problems)
            return
        plan = plan_reload(self.config, loaded.config)
        if plan.applied.images.max_bytes > plan.applied.server.max_body_bytes:
            # Checked against the new server section, which waits for a restart.
            events.error(
                "config_reload_failed", config=str(self.loaded.path),
                problems=["images.max_bytes: larger than the running server.max_body_bytes (server.* needs a restart)"],
            )
            return
        self._apply_config(LoadedConfig(plan.applied, loaded.path))
        if plan.needs_restart:
            events.warning("config_needs_restart", keys=plan.needs_restart)
        events.info(
            "config_reloaded", config=str(loaded.path), changed=plan.changed,
            recycle_worker=plan.recycle_worker, kept_until_restart=plan.needs_restart,
        )
        if plan.recycle_worker:
            self.worker.recycle("config reloaded")

    def _apply_config(self, loaded: LoadedConfig) -> None:
        cfg = self.config = loaded.config
        self.loaded = loaded
        self.tokens = TokenSet(cfg.auth.tokens)
        self.metrics_tokens = TokenSet([cfg.metrics.token] if cfg.metrics.token else [])
        self.jobs.retention_s = cfg.jobs.retention_s
        self.scheduler.max_pending = cfg.queue.max_pending
        self.admission.config = cfg
        self.callbacks.reconfigure(cfg.callback, cfg.spool)
        self.job_events.reconfigure(cfg.events, cfg.callback)
        self.dispatcher.retry_crashed_jobs = cfg.worker.retry_crashed_jobs
        self.dispatcher.default_model_version = cfg.model.version
        self.worker.reconfigure(loaded)
        jsonlog.set_level(cfg.logging.level)

    async def _drain(self, why: str, drain_s: float) -> int:
        """Stop taking jobs, let running and queued ones finish until the deadline, stop.

        Another stop request during the drain (a second signal) cuts every wait short.
        """
        self.draining = True
        self.job_events.drain()
        current = self.scheduler.current
        events.info(
            "shutdown_started", signal=why, drain_timeout_s=drain_s,
            running_job_id=current.job_id if current else None, queued=self.scheduler.queue_length,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        hurry = loop.create_task(self._next_stop_request())
        idle = loop.create_task(self.dispatcher.wait_idle())
        try:
            await asyncio.wait({idle, hurry}, timeout=drain_s, return_when=asyncio.FIRST_COMPLETED)
            if not idle.done():
                stopped = JobResult.failure("shutdown", "the node stopped before the job could finish")
                self._end_unfinished(stopped, KillReason.DRAIN_DEADLINE)
                # The dispatcher records the ends at once (a running job: once its worker died).
                done, _ = await asyncio.wait({idle}, timeout=10.0)
                if not done:
                    events.error("shutdown_jobs_unsettled")
            # Results finished during the drain had the drain's time for delivery; results
            # ended at the deadline still get an attempt. Told to hurry, deliveries under
            # way get one attempt's time, no more.
            attempt_s = self.config.callback.timeout_s
            await self.callbacks.close(max(deadline - loop.time(), attempt_s), hurry, attempt_s)
        finally:
            hurry.cancel()
            idle.cancel()
        await self.worker.stop()
        return EXIT_WORKER_FAILED if self.worker_failed else 0

    async def _next_stop_request(self) -> signal.Signals | str:
        while True:
            request = await self._stop_requests.get()
            if request == WORKER_FAILED:
                self.worker_failed = True  # nothing queued can run any more: hurry, exit 3
            if request not in NON_STOPPING:
                return request
            events.info("signal_ignored", signal=request.name, why="the node is stopping")

    def _end_unfinished(self, result: JobResult, reason: KillReason) -> None:
        """Every job not finished ends with `result`; a worker still running one is killed
        for `reason` (logged as such, never as a crash)."""
        self.worker.stop_restarting()
        # The queue first: ending the current job would otherwise hand the slot on.
        for job in self.scheduler.take_pending():
            self.dispatcher.complete(job, result)
        if self.scheduler.current is not None:
            self.dispatcher.abort_current(result, reason)

    # --- helpers -------------------------------------------------------------------

    def _on_worker_ready(self, ready: Ready) -> None:
        self._set_build_info(ready.model_version, ready)

    def _set_build_info(self, model_version: str, ready: Ready | None = None) -> None:
        self.metrics.set_build_info(self.version, self.git_commit, self.config.worker.backend, model_version,
                                    ready.comfyui_version if ready else None, ready.comfyui_commit if ready else None)
