"""The worker process: handshake, the I/O loop with heartbeats, and the job thread.

Threads and sockets:
- the main thread owns the DEALER socket to the supervisor. It polls that socket and an
  inproc socket fed by the job thread, sends heartbeats on time whatever the model is
  doing, and forwards results (zero-copy) to the supervisor;
- the job thread runs one job at a time on the engine and pushes the result frames
  through its own inproc socket (ZeroMQ sockets are never shared between threads);
- the job's progress (`progress.py`) is a position the job thread only records; the main
  thread sends it on when it changed, at most every `progress.SEND_INTERVAL_S`, and once
  more before the job's result;
- between jobs the job thread lets the backend release memory (`release.py`: when
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

from gpu_worker import progress, release, wire
from gpu_worker.engine import BackendContext, Engine, JobInputs, Unrunnable
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
RESULTS_ENDPOINT = "inproc://results"
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
        self.results = self.ctx.socket(zmq.PULL)
        self.results.bind(RESULTS_ENDPOINT)
        self.jobs: queue.Queue = queue.Queue()
        self.current_job: str | None = None
        self.reporter: progress.Reporter | None = None  # the current job's position
        self.cancel_event = threading.Event()
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
        events.info("worker_ready", load_time_s=round(engine.load_time_s, 3), **engine.info._asdict())
        thread = threading.Thread(target=self._job_thread, args=(engine,), name="job", daemon=True)
        thread.start()
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
        for every socket, and a job thread stuck inside a kernel never closes its own.
        """
        self.jobs.put(None)  # the job thread closes its socket once it is free
        self.results.close(linger=0)
        self.sock.close()
        terminator = threading.Thread(target=self.ctx.term, name="zmq-term", daemon=True)
        terminator.start()
        terminator.join(timeout=3.0)

    # --- main thread -----------------------------------------------------------------

    def _io_loop(self) -> int:
        interval = self.spec.heartbeat_interval_s
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        poller.register(self.results, zmq.POLLIN)
        next_beat = next_progress = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_beat:
                self.send(Heartbeat())
                next_beat = now + interval
            wake = next_beat
            if self.reporter is not None:
                if now >= next_progress:
                    self._send_progress()
                    next_progress = now + progress.SEND_INTERVAL_S
                wake = min(wake, next_progress)
            ready = dict(poller.poll(max(0.0, wake - now) * 1000))
            if os.getppid() != self.spec.parent_pid:
                events.error("worker_parent_gone", parent_pid=self.spec.parent_pid)
                return WorkerExit.PARENT_GONE
            if self.results in ready:
                self._send_progress()  # the last position goes before the result
                # Forward the job thread's result as it is: no decode, no copy.
                self.sock.send_multipart(self.results.recv_multipart(copy=False), copy=False)
                self.current_job = self.reporter = None
            if self.sock in ready and not self._receive():
                events.info("worker_stopping", busy=self.current_job is not None)
                self.cancel_event.set()
                return WorkerExit.STOPPED

    def _send_progress(self) -> None:
        position = self.reporter.take() if self.reporter is not None else None
        if position is not None:
            self.sock.send_multipart(wire.progress_frames(self.reporter.job_id, *position))

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
            if self.current_job is not None:
                # The supervisor sends one job at a time; refuse rather than queue silently.
                busy = f"worker busy with {self.current_job}"
                self.sock.send_multipart(wire.failure_frames(message.job_id, "backend_error", busy))
                return
            self.current_job = message.job_id
            self.cancel_event = threading.Event()
            self.reporter = progress.Reporter(message.job_id)
            self.jobs.put((wire.job_inputs(message, blobs), self.cancel_event, self.reporter))
        elif isinstance(message, CancelJob):
            if message.job_id == self.current_job:
                self.cancel_event.set()

    # --- job thread ------------------------------------------------------------------

    def _job_thread(self, engine: Engine) -> None:
        push = self.ctx.socket(zmq.PUSH)
        push.connect(RESULTS_ENDPOINT)
        schedule = release.ReleaseSchedule()
        while True:
            if schedule.due():
                self._release(engine)
                schedule.released()
            try:
                item = self.jobs.get(timeout=schedule.wait_s())
            except queue.Empty:
                continue  # idle until the release was due
            if item is None:
                push.close(linger=0)
                return
            push.send_multipart(self._run_one(engine, *item), copy=False)
            del item  # the inputs go now, not when the next job arrives
            schedule.job_done()

    @staticmethod
    def _release(engine: Engine) -> None:
        started = time.perf_counter()
        try:
            engine.release()
        except Exception:  # best effort: the next job runs whatever happens here
            events.exception("worker_release_failed")
            return
        events.info("worker_released", seconds=round(time.perf_counter() - started, 4))

    def _run_one(
        self, engine: Engine, inputs: JobInputs, cancelled: threading.Event, reporter: progress.Reporter
    ) -> list:
        """The frames that end this job: a result or a failure, whatever happens here."""
        try:
            events.info("inference_started", job_id=inputs.job_id, seed=inputs.seed, steps=inputs.steps)
            with progress.reporting(reporter):
                outcome = engine.run(inputs, cancelled)
            if outcome.output is not None:
                out = outcome.output
                events.info(
                    "inference_completed", job_id=inputs.job_id, inference_ms=round(out.inference_ms, 1),
                    decode_ms=round(out.decode_ms, 1), encode_ms=round(out.encode_ms, 1),
                    width=out.width, height=out.height, bytes=len(out.image),
                )
            else:
                error = outcome.error
                assert error is not None
                events.warning("inference_failed", job_id=inputs.job_id, error_code=error.code, error=error.message)
            return wire.outcome_frames(inputs.job_id, outcome)
        except Exception as exc:  # a bug here must not leave the job without an end
            events.exception("worker_internal_error", job_id=inputs.job_id)
            return wire.failure_frames(inputs.job_id, "backend_error", f"worker error: {exc}")
