"""Backends and how a job runs on one: pure, no sockets, testable on its own.

A backend is a class with `load()` and either three stages, `prepare(inputs, cancelled)`
(decode: CPU), `model(prepared, cancelled)` (the model: the GPU) and `finish(modelled)`
(resize, encode: CPU) -> JobOutput, which the worker runs overlapped (one job in each), or
one `run(inputs, cancelled) -> JobOutput`, all of it then the model stage. It is chosen by
name (`reference`, `comfyui`) or by import path (`package.module:Class`). The engine maps
whatever a backend raises onto the contract's error codes, so a bug or an out-of-memory
costs one job, never the process.
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
        """Run one job; check `cancelled` between steps and raise JobCancelled. (Not needed
        where the backend has the three stages below.)"""

    def prepare(self, inputs: JobInputs, cancelled: threading.Event) -> Any:
        """The CPU work before the model (decoding), off the GPU's time: what `model` needs.
        Runs on its own thread while another job is in `model` (optional, with the two below)."""

    def model(self, prepared: Any, cancelled: threading.Event) -> Any:
        """The model alone (the GPU's time): what `finish` needs. Progress is reported here."""

    def finish(self, modelled: Any) -> JobOutput:
        """The CPU work after the model (resize to the promised size, encode), on its own
        thread while the next job is in `model`."""

    def free_memory(self) -> None:
        """Release cached memory after an out-of-memory (optional)."""

    def release(self) -> None:
        """Between jobs (after one, at most every 10 s: gpu_worker/release.py): what the
        model's own job loop releases then (optional)."""

    def close(self) -> None:
        """At the worker's exit, and after a load that failed: remove what it made (optional)."""


class StagedRun:
    """A base for a backend with the three stages: `run` as the three in a row, for a caller
    that wants a job done in one call (tests, tools). A subclass that overrides `run` is run
    by it, whole, as the model stage: its override is what it means."""

    def run(self, inputs: JobInputs, cancelled: threading.Event) -> JobOutput:
        return self.finish(self.model(self.prepare(inputs, cancelled), cancelled))  # type: ignore[attr-defined]


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


STAGES = ("prepare", "model", "finish")


class Staged(NamedTuple):
    """A job between two stages: what the last one made, or how it failed (then no later
    stage runs), and how long each stage so far took (ms)."""

    inputs: JobInputs
    value: Any
    error: JobError | None
    prepare_ms: float = 0.0
    model_ms: float = 0.0


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

    @property
    def staged(self) -> bool:
        """The backend has the three stages; otherwise all of `run` is the model stage."""
        run = getattr(type(self.backend), "run", StagedRun.run)
        return run is StagedRun.run and all(callable(getattr(self.backend, name, None)) for name in STAGES)

    def run(self, inputs: JobInputs, cancelled: threading.Event) -> Outcome:
        """The three stages one after the other. Never raises."""
        return self.finish(self.model(self.prepare(inputs, cancelled), cancelled))

    def prepare(self, inputs: JobInputs, cancelled: threading.Event) -> Staged:
        """Never raises: a bug, a bad input or an out-of-memory costs this job only."""
        if cancelled.is_set():
            return Staged(inputs, None, JobCancelled("cancelled before it started"))
        if not self.staged:
            return Staged(inputs, inputs, None)
        started = time.perf_counter()
        value, error = self._guarded(self.backend.prepare, inputs, cancelled)
        # Its images are decoded (or failed): the encoded bytes need not live on with it.
        lean = inputs._replace(person_image=b"", garment_image=b"")
        return Staged(lean, value, error, prepare_ms=(time.perf_counter() - started) * 1000)

    def model(self, prepared: Staged, cancelled: threading.Event) -> Staged:
        if prepared.error is not None:
            return prepared
        if cancelled.is_set():
            return prepared._replace(value=None, error=JobCancelled("cancelled before its model stage"))
        started = time.perf_counter()
        if self.staged:
            value, error = self._guarded(self.backend.model, prepared.value, cancelled)
        else:
            value, error = self._guarded(lambda i, c: checked_output(self.backend.run(i, c)), prepared.value, cancelled)
        return prepared._replace(value=value, error=error, model_ms=(time.perf_counter() - started) * 1000)

    def finish(self, modelled: Staged) -> Outcome:
        """The job's output, or how it failed; `finish_ms` is the finish stage's own time."""
        if modelled.error is not None:
            return Outcome(None, modelled.error)
        if not self.staged:
            return Outcome(modelled.value, None)
        output, error = self._guarded(lambda value, _: checked_output(self.backend.finish(value)), modelled.value, None)
        if output is not None:  # the model stage's time, as the engine measured it
            output = output._replace(inference_ms=modelled.model_ms)
        return Outcome(output, error)

    def _guarded(self, stage: Any, value: Any, cancelled: threading.Event | None) -> tuple[Any, JobError | None]:
        try:
            return stage(value, cancelled), None
        except JobError as exc:
            if exc.code not in WORKER_ERROR_CODES:
                return None, JobError("backend_error", f"{exc.code}: {exc.message}")
            return None, exc
        except Exception as exc:
            if is_out_of_memory(exc):
                self._free_memory()
                return None, JobError("out_of_memory", f"out of memory: {exc}")
            return None, JobError("backend_error", f"{type(exc).__name__}: {exc}")

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
