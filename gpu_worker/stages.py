"""The worker's three stage threads, one job in each (engine.py's stages), and what they
share with the I/O thread (gpu_worker/main.py).

`prepare` decodes, `model` runs the GPU's part and says ModelStarted and ModelDone, `finish`
resizes, encodes and ends the job. What they produce goes into one queue in the order it was
made (a job's ModelDone always before its result), and a byte on each thread's own inproc
socket wakes the I/O thread, which forwards it (ZeroMQ sockets are never shared between
threads). Between jobs the model thread lets the backend release memory (`release.py`).
"""

from __future__ import annotations

import queue
import threading
import time

import zmq

from gpu_worker import progress, release, wire
from gpu_worker.engine import Engine
from ipc import codec, jsonlog
from ipc.messages import JobPrepared, ModelDone, ModelStarted

events = jsonlog.EventLog("gpu_worker")
RESULTS_ENDPOINT = "inproc://results"
# What a stage produced, for the I/O thread's own bookkeeping (the frames go on as they are).
PREPARED, STARTED, MODEL_DONE, ENDED = "prepared", "started", "model_done", "ended"


class Producer:
    """One stage thread's way out: what it made goes into the shared queue, in order, and a
    byte on the thread's own inproc socket wakes the main thread."""

    def __init__(self, ctx: zmq.Context, produced: queue.SimpleQueue) -> None:
        self.produced = produced
        self.push = ctx.socket(zmq.PUSH)
        self.push.connect(RESULTS_ENDPOINT)

    def __call__(self, kind: str, job_id: str, frames: list) -> None:
        self.produced.put((kind, job_id, frames))
        self.push.send(b"", copy=False)

    def close(self) -> None:
        self.push.close(linger=0)


class JobControl:
    """What the threads share of a job in the worker: its cancel flag, its position, and who
    ends it. A cancel before its model stage is answered by the main thread at once, whatever
    a decode is doing; the stage threads then drop the job without a word. `lock` orders that
    answer against the model thread's claim of the job."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.cancel = threading.Event()
        self.reporter = progress.Reporter(job_id)
        self.in_model = False  # main thread: from ModelStarted to ModelDone (its position is sent)
        self.lock = threading.Lock()
        self.started = False  # the model thread took it (under `lock`)
        self.answered = False  # the main thread ended it (under `lock`)

    def claim(self) -> bool:
        """For the model thread: True if the job is still its to run (not answered)."""
        with self.lock:
            if not self.answered:
                self.started = True
            return self.started

    def answer_cancel(self) -> bool:
        """For the main thread: True if the job had not reached its model stage, and is now
        ended here (its stage threads will drop it)."""
        self.cancel.set()
        with self.lock:
            if not self.started:
                self.answered = True
            return self.answered

    @property
    def dropped(self) -> bool:
        with self.lock:
            return self.answered


class Stages:
    """The three threads and the hand-overs between them (None: stop). One job in each: the
    supervisor sends a job only once the one before has left prepare, and `finish_free` holds
    a modelled job back until the finish stage is empty."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.ctx = ctx
        self.to_prepare: queue.Queue = queue.Queue()
        self.to_model: queue.Queue = queue.Queue(maxsize=1)
        self.to_finish: queue.Queue = queue.Queue(maxsize=1)
        self.finish_free = threading.Semaphore(1)
        # (kind, job_id, frames) from the stage threads, in the order they were made.
        self.produced: queue.SimpleQueue = queue.SimpleQueue()

    def start(self, engine: Engine) -> None:
        for name, target in (("prepare", self._prepare_thread), ("model", self._model_thread),
                             ("finish", self._finish_thread)):
            threading.Thread(target=target, args=(engine,), name=name, daemon=True).start()

    def submit(self, inputs, control: JobControl) -> None:
        self.to_prepare.put((inputs, control))

    def stop(self) -> None:
        self.to_prepare.put(None)  # passed on from stage to stage

    def _producer(self) -> Producer:
        return Producer(self.ctx, self.produced)

    # Each thread hands one job to a method of its own and drops it after: no local holds a
    # job's images while the thread waits for the next one.

    def _prepare_thread(self, engine: Engine) -> None:
        produce = self._producer()
        while True:
            item = self.to_prepare.get()
            if item is None:
                produce.close()
                self.to_model.put(None)
                return
            self._prepare_one(engine, produce, *item)
            del item

    def _prepare_one(self, engine: Engine, produce: Producer, inputs, control: JobControl) -> None:
        try:
            staged = engine.prepare(inputs, control.cancel)
            del inputs  # the encoded images: decoded now (Staged keeps the job without them)
            if control.dropped:
                return  # cancelled meanwhile, and answered by the main thread
            job_id = staged.inputs.job_id
            if staged.error is not None:
                self._log_failure(job_id, staged.error)
                produce(ENDED, job_id, wire.failure_frames(
                    job_id, staged.error.code, staged.error.message, prepare_ms=staged.prepare_ms))
                return
            produce(PREPARED, job_id, codec.encode(JobPrepared(job_id=job_id, prepare_ms=staged.prepare_ms)))
            self.to_model.put((staged, control))
        except Exception as exc:  # a bug here must not leave the job without an end
            self._internal_error(produce, control.job_id, exc)

    def _model_thread(self, engine: Engine) -> None:
        produce = self._producer()
        schedule = release.ReleaseSchedule()
        while True:
            if schedule.due():
                self._release(engine)
                schedule.released()
            try:
                item = self.to_model.get(timeout=schedule.wait_s())
            except queue.Empty:
                continue  # idle until the release was due
            if item is None:
                produce.close()
                self.to_finish.put(None)
                return
            self._model_one(engine, produce, *item)
            del item
            schedule.job_done()

    def _model_one(self, engine: Engine, produce: Producer, staged, control: JobControl) -> None:
        job_id = control.job_id
        try:
            if not control.claim():
                return  # cancelled while it waited, and answered by the main thread
            produce(STARTED, job_id, codec.encode(ModelStarted(job_id=job_id)))
            events.info("inference_started", job_id=job_id, seed=staged.inputs.seed, steps=staged.inputs.steps)
            with progress.reporting(control.reporter):
                modelled = engine.model(staged, control.cancel)
            del staged
            if modelled.error is not None:
                self._log_failure(job_id, modelled.error)
                produce(ENDED, job_id, wire.failure_frames(
                    job_id, modelled.error.code, modelled.error.message, prepare_ms=modelled.prepare_ms))
                return
            produce(MODEL_DONE, job_id, codec.encode(ModelDone(job_id=job_id, inference_ms=modelled.model_ms)))
            self.finish_free.acquire()  # until the job before has finished
            self.to_finish.put(modelled)
        except Exception as exc:
            self._internal_error(produce, job_id, exc)

    def _finish_thread(self, engine: Engine) -> None:
        produce = self._producer()
        while True:
            modelled = self.to_finish.get()
            if modelled is None:
                produce.close()
                return
            try:
                self._finish_one(engine, produce, modelled)
            finally:
                del modelled
                self.finish_free.release()

    def _finish_one(self, engine: Engine, produce: Producer, modelled) -> None:
        job_id = modelled.inputs.job_id
        try:
            started = time.perf_counter()
            outcome = engine.finish(modelled)
            finish_ms = (time.perf_counter() - started) * 1000
            if outcome.output is not None:
                out = outcome.output
                events.info(
                    "inference_completed", job_id=job_id, inference_ms=round(out.inference_ms, 1),
                    prepare_ms=round(modelled.prepare_ms, 1), finish_ms=round(finish_ms, 1),
                    decode_ms=round(out.decode_ms, 1), encode_ms=round(out.encode_ms, 1),
                    width=out.width, height=out.height, bytes=len(out.image),
                )
            else:
                assert outcome.error is not None
                self._log_failure(job_id, outcome.error)
            produce(ENDED, job_id, wire.outcome_frames(job_id, outcome, modelled.prepare_ms, finish_ms))
        except Exception as exc:
            self._internal_error(produce, job_id, exc)

    @staticmethod
    def _log_failure(job_id: str, error) -> None:
        events.warning("inference_failed", job_id=job_id, error_code=error.code, error=error.message)

    @staticmethod
    def _internal_error(produce, job_id: str, exc: Exception) -> None:
        events.exception("worker_internal_error", job_id=job_id)
        produce(ENDED, job_id, wire.failure_frames(job_id, "backend_error", f"worker error: {exc}"))

    @staticmethod
    def _release(engine: Engine) -> None:
        started = time.perf_counter()
        try:
            engine.release()
        except Exception:  # best effort: the next job runs whatever happens here
            events.exception("worker_release_failed")
            return
        events.info("worker_released", seconds=round(time.perf_counter() - started, 4))
