"""The worker process: handshake, and the I/O loop with heartbeats around the stage threads.

Threads and sockets:
- the main thread owns the DEALER socket to the supervisor. It polls that socket and an
  inproc socket the stage threads wake it through, sends heartbeats on time whatever the
  model is doing, and forwards what the stages produced (zero-copy) to the supervisor;
- a job goes through three threads, one job in each at most (`stages.py`, engine.py's stages):
  `prepare` (decode), `model` (the GPU's part; it says ModelStarted and ModelDone), `finish`
  (resize, encode, the result). So the next job is decoded while the current one is in the
  model, and the last one is encoded meanwhile too; the supervisor frees the GPU slot at
  ModelDone. It hands over a new job only once every job it sent has started its model
  stage (one job prepared and waiting at most); the worker refuses one more;
- what the stages produce goes into one queue in the order it was made (a job's ModelDone
  always before its result), and a byte on the thread's own inproc socket wakes the main
  thread (ZeroMQ sockets are never shared between threads);
- a job's progress (`progress.py`) is a position the model stage only records; the main
  thread sends it on when it changed, at most every `progress.SEND_INTERVAL_S`, and once
  more before anything else about that job;
- between jobs the model thread lets the backend release memory (`release.py`: when
  ComfyUI's own job loop would), and at the exit the backend removes what it made.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import signal
import sys
import threading
import time

import zmq

from gpu_worker import progress, wire
from gpu_worker.engine import BackendContext, Engine, Unrunnable
from gpu_worker.stages import ENDED, MODEL_DONE, RESULTS_ENDPOINT, STARTED, JobControl, Stages
from gpu_worker.stdio import capture_stdout
from ipc import codec, jsonlog
from ipc.exit_codes import WorkerExit
from ipc.messages import (
    PROTOCOL_VERSION,
    SPEC_ENV,
    CancelJob,
    Heartbeat,
    Hello,
    RunJob,
    Shutdown,
    StartupFailed,
    WorkerSpec,
    decode_spec,
)

events = jsonlog.EventLog("gpu_worker")
PR_SET_PDEATHSIG = 1


def main() -> None:
    try:
        spec = decode_spec(os.environ[SPEC_ENV])
    except (KeyError, ValueError) as exc:
        print(f"gpu_worker: no valid {SPEC_ENV} in the environment ({exc}); "
              "the worker is started by `gpu-server serve`", file=sys.stderr)
        sys.exit(WorkerExit.BAD_SPEC)
    jsonlog.setup(spec.node_id, "gpu_worker", spec.log_level, capture_stdout())
    _die_with_parent(spec.parent_pid)
    try:
        code = WorkerProcess(spec).run()
    except Exception:
        events.exception("worker_internal_error")
        code = WorkerExit.INTERNAL_ERROR
    logging.shutdown()
    # os._exit: no waiting on a job thread stuck in a kernel, no slow interpreter teardown.
    os._exit(code)


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL us when the supervisor dies, even by SIGKILL."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the I/O loop's getppid() check still catches it
    if os.getppid() != parent_pid:  # died before prctl took effect
        os._exit(WorkerExit.PARENT_GONE)


class WorkerProcess:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, spec.worker_id.encode())
        # Long enough for a last StartupFailed to leave before the process exits.
        self.sock.setsockopt(zmq.LINGER, 2000)
        self.wakeups = self.ctx.socket(zmq.PULL)
        self.wakeups.bind(RESULTS_ENDPOINT)
        self.stages = Stages(self.ctx)
        self.jobs: dict[str, JobControl] = {}  # main thread only: every job in the worker
        self.preparing: str | None = None  # main thread only: the job not yet in its model stage
        self.decoder = codec.supervisor_message_decoder()

    def send(self, message, *blobs) -> None:
        self.sock.send_multipart(codec.encode(message, *blobs), copy=False)

    def run(self) -> int:
        spec = self.spec
        self.sock.connect(spec.endpoint)
        self.send(Hello(protocol=PROTOCOL_VERSION, worker_id=spec.worker_id, pid=os.getpid()))
        events.info("worker_loading", pid=os.getpid(), backend=spec.backend, device=spec.device)
        context = BackendContext(spec.device, spec.backend_settings, spec.max_pixels, spec.config_dir)
        try:
            engine = Engine.load(spec.backend, context, spec.model_version)
        except Exception as exc:
            events.exception("worker_load_failed", backend=spec.backend)
            self.send(StartupFailed(reason=type(exc).__name__, message=str(exc)))
            self.close()
            # A model the engine cannot run right: a restart would refuse it again.
            return WorkerExit.UNRUNNABLE if isinstance(exc, Unrunnable) else WorkerExit.LOAD_FAILED
        self.send(wire.ready(engine))
        events.info("worker_ready", load_time_s=round(engine.load_time_s, 3), staged=engine.staged,
                    **engine.info._asdict())
        self.stages.start(engine)
        code = self._io_loop()
        self.close()
        self._close_engine(engine)
        return code

    @staticmethod
    def _close_engine(engine: Engine) -> None:
        try:
            engine.close()
        except Exception:  # best effort: the exit goes on
            events.exception("worker_close_failed")

    def close(self) -> None:
        """Flush what is still queued for the supervisor (up to LINGER), then let go.

        The context is terminated from a helper thread with a deadline: termination waits
        for every socket, and a stage thread stuck inside a kernel never closes its own.
        """
        self.stages.stop()  # each stage thread closes its socket once it is free
        self.wakeups.close(linger=0)
        self.sock.close()
        terminator = threading.Thread(target=self.ctx.term, name="zmq-term", daemon=True)
        terminator.start()
        terminator.join(timeout=3.0)

    # --- main thread -----------------------------------------------------------------

    def _io_loop(self) -> int:
        interval = self.spec.heartbeat_interval_s
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.wakeups, zmq.POLLIN)
        next_beat = next_progress = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self.send(Heartbeat())
                next_beat = now + interval
            wake = next_beat
            if any(job.in_model for job in self.jobs.values()):
                if now >= next_progress:
                    self._send_progress()
                    next_progress = now + progress.SEND_INTERVAL_S
                wake = min(wake, next_progress)
            ready = dict(poller.poll(max(0.0, wake - now) * 1000))
            if os.getppid() != self.spec.parent_pid:
                events.error("worker_parent_gone", parent_pid=self.spec.parent_pid)
                return WorkerExit.PARENT_GONE
            if self.wakeups in ready:
                self._forward_produced()
            if self.sock in ready and not self._receive():
                events.info("worker_stopping", jobs=sorted(self.jobs))
                for job in self.jobs.values():
                    job.cancel.set()
                return WorkerExit.STOPPED

    def _forward_produced(self) -> None:
        while True:  # the wake-up bytes carry nothing: the queue holds what to send
            try:
                self.wakeups.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while True:
            try:
                kind, job_id, frames = self.stages.produced.get_nowait()
            except queue.Empty:
                return
            job = self.jobs.get(job_id)
            if job is None:
                continue  # ended by the main thread already (a cancel before its model stage)
            self._send_progress()  # a job's last position goes before its ModelDone or result
            if kind == STARTED:
                if self.preparing == job_id:
                    self.preparing = None  # the next job may come
                job.in_model = True
            elif kind == MODEL_DONE:
                job.in_model = False
            elif kind == ENDED:  # its result or failure, from whichever stage
                self.jobs.pop(job_id, None)
                if self.preparing == job_id:
                    self.preparing = None
            # Forwarded as made: no decode, no copy.
            self.sock.send_multipart(frames, copy=False)

    def _send_progress(self) -> None:
        for job in self.jobs.values():
            position = job.reporter.take() if job.in_model else None
            if position is not None:
                self.sock.send_multipart(wire.progress_frames(job.reporter.job_id, *position))

    def _receive(self) -> bool:
        """Handle one message from the supervisor; False when told to shut down.
        (A method of its own so no frame outlives its handling in a local variable.)"""
        frames = self.sock.recv_multipart(copy=False)
        try:
            message, blobs = self.decoder.decode(frames)
        except codec.ProtocolError as exc:
            events.error("worker_protocol_error", error=str(exc))
            return True
        if isinstance(message, Shutdown):
            return False
        self._on_message(message, blobs)
        return True

    def _on_message(self, message, blobs: list) -> None:
        if isinstance(message, RunJob):
            if self.preparing is not None or message.job_id in self.jobs:
                # The supervisor sends a job only once the last one is in its model stage;
                # refuse rather than hold two undecoded jobs.
                busy = f"worker busy preparing {self.preparing or message.job_id}"
                self.sock.send_multipart(wire.failure_frames(message.job_id, "backend_error", busy))
                return
            job = self.jobs[message.job_id] = JobControl(message.job_id)
            self.preparing = message.job_id
            self.stages.submit(wire.job_inputs(message, blobs), job)
        elif isinstance(message, CancelJob):
            job = self.jobs.get(message.job_id)
            if job is not None and job.answer_cancel():
                # Not in the model yet: ended now, not once a decode or the job ahead is done.
                self.jobs.pop(job.job_id)
                if self.preparing == job.job_id:
                    self.preparing = None
                events.info("inference_failed", job_id=job.job_id, error_code="cancelled",
                            error="cancelled before its model stage")
                self.sock.send_multipart(
                    wire.failure_frames(job.job_id, "cancelled", "cancelled before its model stage"))
