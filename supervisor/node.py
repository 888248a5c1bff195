"""The node: wires the parts together and runs them from start to a clean stop.

Signal handlers only put the signal on a queue; the main coroutine does the work
(`handle_<signal>` methods, dispatched by name). A background task that dies of a bug
puts FATAL on the same queue: the node then stops at once and exits 1, so that systemd
or Kubernetes restart it, rather than limping on without a dispatcher.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from ipc.jsonlog import EventLog
from ipc.messages import Ready
from ipc.transport import make_runtime_dir, remove_runtime_dir
from supervisor import build_info
from supervisor.admission import Admission
from supervisor.app import create_app
from supervisor.auth import TokenSet
from supervisor.callback import CallbackSender
from supervisor.config import LoadedConfig
from supervisor.dispatcher import Dispatcher
from supervisor.jobs import JobResult, JobStore
from supervisor.jobs_api import JobsApi
from supervisor.metrics import Metrics
from supervisor.scheduler import Scheduler
from supervisor.spool import Spool, SpoolUnusable
from supervisor.status import readiness
from supervisor.worker_supervisor import WorkerSupervisor, watched

events = EventLog("supervisor.node")
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FATAL = "fatal"
EXIT_INTERNAL_ERROR = 1


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
        self.runtime_dir = runtime_dir or make_runtime_dir()
        self.worker = WorkerSupervisor(loaded, self.metrics, self.runtime_dir)
        self.worker.on_ready = self._on_worker_ready
        self.worker.on_fatal = self._fatal
        self.spool = Spool(loaded.spool_dir, on_quarantine=self.metrics.spool_quarantined.inc)
        self.callbacks = CallbackSender(cfg.callback, cfg.node_id, self.metrics, self.spool, cfg.spool)
        self.dispatcher = Dispatcher(
            self.scheduler, self.worker, self.callbacks, self.metrics, cfg.model.version
        )
        self.admission = Admission(
            cfg, self.jobs, self.scheduler, self.metrics, self.readiness, self.dispatcher.wake, self.spool.holds
        )
        self.jobs_api = JobsApi(self.jobs, self.callbacks, self.scheduler, self.dispatcher, self.worker)
        self.draining = False
        self._stop_requests: asyncio.Queue[signal.Signals | str] = asyncio.Queue()
        self.metrics.bind_state(
            busy=lambda: self.scheduler.busy,
            queue_length=lambda: self.scheduler.queue_length,
            worker_pid=lambda: self.worker.pid,
            model_loaded=lambda: self.worker.model_loaded,
            spool_pending=lambda: len(self.spool),
        )
        self._set_build_info(cfg.model.version or "")
        self.app = create_app(self)

    def readiness(self) -> str:
        return readiness(self.worker.state, self.draining)

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
                cfg.server.host, cfg.server.port, access_log=False, return_asyncio_server=True, backlog=1024
            )
        except OSError as exc:
            events.error("startup_failed", error=f"cannot listen on {cfg.server.host}:{cfg.server.port}: {exc}")
            remove_runtime_dir(self.runtime_dir)
            return 1
        assert server is not None
        dispatcher = None
        try:
            await server.startup()
            events.info(
                "node_started", host=cfg.server.host, port=cfg.server.port, pid=os.getpid(),
                version=self.version, git_commit=self.git_commit, backend=cfg.worker.backend,
                config=str(self.loaded.path),
            )
            await self.callbacks.start()
            await self.worker.start()
            dispatcher = watched(self.dispatcher.run(), "dispatcher", self._fatal)
            while True:
                request = await self._stop_requests.get()
                if request == FATAL:
                    await self._drain("internal error", drain_s=0.0)
                    return EXIT_INTERNAL_ERROR
                handler = getattr(self, f"handle_{request.name.removeprefix('SIG').lower()}")
                exit_code = await handler()
                if exit_code is not None:
                    return exit_code
        finally:
            if dispatcher is not None:
                dispatcher.cancel()
            server.close()
            await server.wait_closed()
            remove_runtime_dir(self.runtime_dir)
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

    async def _drain(self, why: str, drain_s: float) -> int:
        """Stop taking jobs, let running and queued ones finish until the deadline, stop.

        Another stop request during the drain (a second signal) cuts every wait short.
        """
        self.draining = True
        current = self.scheduler.current
        events.info(
            "shutdown_started", signal=why, drain_timeout_s=drain_s,
            running_job_id=current.job_id if current else None, queued=self.scheduler.queue_length,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_s
        hurry = loop.create_task(self._stop_requests.get())
        idle = loop.create_task(self.dispatcher.wait_idle())
        try:
            await asyncio.wait({idle, hurry}, timeout=drain_s, return_when=asyncio.FIRST_COMPLETED)
            if not idle.done():
                self._end_unfinished(JobResult.failure("shutdown", "the node stopped before the job could finish"))
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
        return 0

    def _end_unfinished(self, result: JobResult) -> None:
        self.worker.stop_restarting()
        # The queue first: ending the current job would otherwise hand the slot on.
        for job in self.scheduler.take_pending():
            self.dispatcher.complete(job, result)
        if self.scheduler.current is not None:
            self.dispatcher.abort_current(result)

    # --- helpers -------------------------------------------------------------------

    def _on_worker_ready(self, ready: Ready) -> None:
        self._set_build_info(ready.model_version)

    def _set_build_info(self, model_version: str) -> None:
        self.metrics.set_build_info(self.version, self.git_commit, self.config.worker.backend, model_version)
