"""Backends and how a job runs on one: pure, no sockets, testable on its own.

A backend is a class with `load()` and `run(inputs, cancelled) -> JobOutput`, chosen by
name (`reference`, `comfyui`) or by import path (`package.module:Class`). The engine
maps whatever a backend raises onto the contract's error codes, so a bug or an
out-of-memory costs one job, never the process.
"""

from __future__ import annotations

import gc
import importlib
import sys
import threading
import time
from typing import Any, NamedTuple, Protocol

# The error codes a job may end with in the worker (the supervisor adds worker_crashed,
# inference_timeout and shutdown). Anything else a backend raises becomes backend_error.
WORKER_ERROR_CODES = frozenset({"invalid_input", "out_of_memory", "backend_error", "cancelled"})
OUTPUT_CONTENT_TYPES = frozenset({"image/png", "image/jpeg", "image/webp"})

BUILTIN_BACKENDS = {
    "reference": "gpu_worker.backends.reference:ReferenceBackend",
    "comfyui": "gpu_worker.backends.comfyui.backend:ComfyUIBackend",
}


class BackendContext(NamedTuple):
    device: str  # as configured: auto, cpu, cuda, cuda:N
    settings: dict[str, Any]  # the config's model.<backend> section
    max_pixels: int
    config_dir: str


class JobInputs(NamedTuple):
    job_id: str
    person_image: bytes
    garment_image: bytes
    seed: int
    output_format: str
    steps: int | None = None
    prompt: str | None = None
    # `person`: the output at the upright person image's size; `model`: as the model made it.
    output_size: str = "person"


class JobOutput(NamedTuple):
    image: bytes
    content_type: str
    width: int
    height: int
    inference_ms: float
    decode_ms: float = 0.0
    encode_ms: float = 0.0


class LoadInfo(NamedTuple):
    backend: str
    model_version: str
    device: str
    torch_version: str | None = None
    comfyui_version: str | None = None
    comfyui_commit: str | None = None  # the engine checkout's commit, where it has one
    engine_tested: bool | None = None  # whether this node is tested with that engine version
    engine_options: dict[str, Any] | None = None  # the engine's start-up options in force
    gpu_compute_capability: str | None = None  # "9.0"; None on the CPU


def compute_capability(device: str) -> str | None:
    """The CUDA device's compute capability ("9.0"); None for the CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    major, minor = torch.cuda.get_device_capability(str(device))
    return f"{major}.{minor}"


class JobError(Exception):
    """A job failure with a contract error code (invalid_input, backend_error, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Unrunnable(Exception):
    """The backend cannot run its model right on what is installed (a checkpoint the engine
    would run degraded, say): no retry can mend that, so the worker exits UNRUNNABLE and the
    supervisor gives up at once instead of restarting it."""


class JobCancelled(JobError):
    def __init__(self, message: str = "cancelled") -> None:
        super().__init__("cancelled", message)


class Backend(Protocol):
    def __init__(self, context: BackendContext) -> None: ...

    def load(self) -> LoadInfo:
        """Load the model once; raise to report that the worker cannot start."""

    def run(self, inputs: JobInputs, cancelled: threading.Event) -> JobOutput:
        """Run one job; check `cancelled` between steps and raise JobCancelled."""

    def free_memory(self) -> None:
        """Release cached memory after an out-of-memory (optional)."""

    def release(self) -> None:
        """Between jobs (after one, at most every 10 s: gpu_worker/release.py): what the
        model's own job loop releases then (optional)."""

    def close(self) -> None:
        """At the worker's exit, and after a load that failed: remove what it made (optional)."""


class BackendNotFound(Exception):
    pass


def backend_class(name: str) -> type:
    target = BUILTIN_BACKENDS.get(name, name)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendNotFound(f"backend {name!r}: cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise BackendNotFound(f"backend {name!r}: {module_name} has no {class_name}") from None


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return type(exc).__name__ == "OutOfMemoryError"


class Outcome(NamedTuple):
    output: JobOutput | None
    error: JobError | None


class Engine:
    """A loaded backend plus the rules every job follows."""

    def __init__(self, backend: Any, info: LoadInfo, load_time_s: float) -> None:
        self.backend = backend
        self.info = info
        self.load_time_s = load_time_s

    @classmethod
    def load(cls, name: str, context: BackendContext, model_version: str | None = None) -> Engine:
        started = time.perf_counter()
        backend = backend_class(name)(context)
        try:
            loaded = backend.load()
        except BaseException:
            close = getattr(backend, "close", None)
            try:
                if close is not None:
                    close()  # what it made before failing (a folder, say) goes with it
            except Exception:
                pass  # the load's own failure is the one to report
            raise
        # Plain strings for the wire (torch.__version__, say, is a str subclass).
        info = loaded._replace(**{
            name: None if value is None else str(value)
            for name, value in loaded._asdict().items() if name not in ("engine_options", "engine_tested")
        })
        if info.engine_tested is not None:
            info = info._replace(engine_tested=bool(info.engine_tested))
        if model_version:
            info = info._replace(model_version=model_version)
        return cls(backend, info, time.perf_counter() - started)

    def run(self, inputs: JobInputs, cancelled: threading.Event) -> Outcome:
        """Never raises: a bug, a bad output or an out-of-memory costs this job only."""
        if cancelled.is_set():
            return Outcome(None, JobCancelled("cancelled before it started"))
        try:
            return Outcome(checked_output(self.backend.run(inputs, cancelled)), None)
        except JobError as exc:
            if exc.code not in WORKER_ERROR_CODES:
                return Outcome(None, JobError("backend_error", f"{exc.code}: {exc.message}"))
            return Outcome(None, exc)
        except Exception as exc:
            if is_out_of_memory(exc):
                self._free_memory()
                return Outcome(None, JobError("out_of_memory", f"out of memory: {exc}"))
            return Outcome(None, JobError("backend_error", f"{type(exc).__name__}: {exc}"))

    def release(self) -> None:
        """Between jobs: what the backend releases then (optional; best effort)."""
        release = getattr(self.backend, "release", None)
        if release is not None:
            release()

    def close(self) -> None:
        """At the worker's exit: the backend's own clean-up (optional; best effort)."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def _free_memory(self) -> None:
        try:
            gc.collect()
            free = getattr(self.backend, "free_memory", None)
            if free is not None:
                free()
        except Exception:  # freeing is best effort; the job is failed either way
            pass


def checked_output(output: Any) -> JobOutput:
    """What a backend returned, in the exact types the wire wants (a numpy int or a
    memoryview is fine; a wrong content type or a missing image is a backend error)."""
    content_type = str(output.content_type)
    if content_type not in OUTPUT_CONTENT_TYPES:
        raise TypeError(f"the backend returned an output of content type {output.content_type!r}")
    return JobOutput(
        image=bytes(output.image),
        content_type=content_type,
        width=int(output.width),
        height=int(output.height),
        inference_ms=float(output.inference_ms),
        decode_ms=float(output.decode_ms),
        encode_ms=float(output.encode_ms),
    )
