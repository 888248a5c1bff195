"""Backends for tests, loaded in the real worker process by import path
(`worker.backend: tests.support.backends:Name`, settings under `model.custom`)."""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
import threading
import time
from pathlib import Path

from gpu_worker.backends.reference import ReferenceBackend
from gpu_worker.engine import BackendContext, LoadInfo


class FailingLoad:
    """Cannot load its model: the worker must report why, then exit."""

    def __init__(self, context: BackendContext) -> None:
        self.context = context

    def load(self) -> LoadInfo:
        raise FileNotFoundError(f"model file {self.context.settings.get('weights', 'weights.safetensors')} is missing")

    def run(self, inputs, cancelled):  # pragma: no cover - never loaded
        raise AssertionError("unreachable")


class Stamped(ReferenceBackend):
    """The reference backend, its model version stamped with its process id: each worker of
    a node reports a version of its own, so a test tells which worker ran a job from its
    callback alone (a recycle by SIGUSR1 changes nothing else)."""

    def load(self) -> LoadInfo:
        info = super().load()
        return info._replace(model_version=f"{info.model_version}+pid{os.getpid()}")


class SlowLoad(ReferenceBackend):
    """The reference backend, after `load_seconds` of loading (hang: a very large number)."""

    def load(self) -> LoadInfo:
        time.sleep(float(self.context.settings.get("load_seconds", 3600)))
        return super().load()


class Faulty(ReferenceBackend):
    """The reference backend, misbehaving on request: the job's prompt names the fault.

    `fault:kill` SIGKILL, `fault:segv` a real segmentation fault, `fault:hang` never ends
    (the I/O thread keeps beating), `fault:freeze` stops the whole process (no heartbeat
    either), `fault:oom` raises torch's OutOfMemoryError, `fault:crash_once` kills the
    worker the first time a job id is seen (marker files under `model.custom.marker_dir`),
    and runs it normally the second time, `fault:kill_on_go` waits for a file
    `<marker_dir>/<job_id>.go` (the test's go-ahead), then SIGKILL. Any other prompt: a
    normal job. Each fault strikes in the model stage, where a CUDA fault would.
    """

    def model(self, prepared, cancelled: threading.Event):
        inputs = prepared.inputs
        fault = (inputs.prompt or "").removeprefix("fault:") if (inputs.prompt or "").startswith("fault:") else None
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "segv":
            faulthandler.disable()  # die as a CUDA library would: no Python in the way
            ctypes.string_at(0)
        elif fault == "hang":
            while True:
                time.sleep(3600)
        elif fault == "freeze":
            os.kill(os.getpid(), signal.SIGSTOP)
        elif fault == "oom":
            import torch

            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (test fault)")
        elif fault == "kill_on_go":
            go = Path(self.context.settings["marker_dir"]) / f"{inputs.job_id}.go"
            while not go.exists():
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "crash_once":
            marker = Path(self.context.settings["marker_dir"]) / inputs.job_id
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        return super().model(prepared, cancelled)


class HeldFinish(ReferenceBackend):
    """The reference backend whose finish stage, for a job whose prompt is `hold`, waits for
    a file `<marker_dir>/<job_id>.go` (the test's go-ahead): a job past its model stage that
    the test keeps finishing as long as it likes. Any other prompt: a normal job."""

    def finish(self, modelled):
        if modelled.inputs.prompt == "hold":
            go = Path(self.context.settings["marker_dir"]) / f"{modelled.inputs.job_id}.go"
            while not go.exists():
                time.sleep(0.02)
        return super().finish(modelled)
