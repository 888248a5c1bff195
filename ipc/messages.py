"""Wire messages between the supervisor and the GPU worker.

Every message is a msgspec struct tagged with its type. Images never travel inside
the encoded header: a message declares how many raw frames follow it (`BLOBS`), and
the codec enforces that count in both directions.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Union

import msgspec

# Bumped whenever a message changes shape. The worker sends it in Hello and the
# supervisor refuses a worker that speaks another version. (2: Heartbeat carries nothing;
# 3: JobProgress; 4: RunJob.output_size; 5: Ready's engine_options and gpu_compute_capability;
# 6: JobPrepared, ModelStarted and ModelDone, the stages' times in a result, several jobs in a worker.)
PROTOCOL_VERSION = 6


class Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True):
    BLOBS: ClassVar[int] = 0


# --- worker -> supervisor ---------------------------------------------------------


class Hello(Message, tag="hello"):
    protocol: int
    worker_id: str
    pid: int


class Ready(Message, tag="ready"):
    backend: str
    model_version: str
    device: str
    load_time_s: float
    torch_version: str | None = None
    comfyui_version: str | None = None
    comfyui_commit: str | None = None
    engine_tested: bool | None = None  # the engine version is one this node is tested with
    # The engine's start-up options in force (ComfyUI's, by their underscored names); None
    # where the backend has none.
    engine_options: dict[str, Any] | None = None
    gpu_compute_capability: str | None = None  # "9.0"; None on the CPU


class StartupFailed(Message, tag="startup_failed"):
    """Sent before the worker exits when its backend cannot load."""

    reason: str
    message: str


class Heartbeat(Message, tag="heartbeat"):
    """Proof of life from the worker's I/O thread; its arrival is all the supervisor reads."""


class JobProgress(Message, tag="progress"):
    """Where the running job is: `step` of `total` of its model's own loop (throttled in the
    worker; the last step of a loop is always sent)."""

    job_id: str
    step: int
    total: int


class JobPrepared(Message, tag="prepared"):
    """The job's prepare stage (decoding) is done in `prepare_ms`; it waits for the model stage."""

    job_id: str
    prepare_ms: float = 0.0


class ModelStarted(Message, tag="model_started"):
    """The job entered the model stage (the GPU's). From here the model stage's timeout
    runs; the job can be cancelled until ModelDone."""

    job_id: str


class ModelDone(Message, tag="model_done"):
    """The job's model stage is over (the GPU is free for the next job); its finish stage
    (resize, encode) follows and ends with the job's result. A job whose model stage fails
    sends no ModelDone: its JobFailed ends it."""

    job_id: str
    inference_ms: float


class JobSucceeded(Message, tag="result"):
    """Followed by one frame: the encoded output image."""

    BLOBS: ClassVar[int] = 1
    job_id: str
    content_type: str
    width: int
    height: int
    inference_ms: float
    decode_ms: float = 0.0
    encode_ms: float = 0.0
    # The stages before and after the model (0 for a backend without separate stages).
    prepare_ms: float = 0.0
    finish_ms: float = 0.0


class JobFailed(Message, tag="failed"):
    job_id: str
    error_code: str
    message: str
    inference_ms: float | None = None
    prepare_ms: float | None = None
    finish_ms: float | None = None


# --- supervisor -> worker ---------------------------------------------------------


class RunJob(Message, tag="run"):
    """Followed by two frames: the person image, then the garment image."""

    BLOBS: ClassVar[int] = 2
    job_id: str
    seed: int
    output_format: str
    steps: int | None = None
    prompt: str | None = None
    # images.output_size, resolved when the job was accepted (a reload applies to the jobs
    # accepted after it, with no new worker): `person` or `model`.
    output_size: Literal["person", "model"] = "person"


class CancelJob(Message, tag="cancel"):
    job_id: str


class Shutdown(Message, tag="shutdown"):
    pass


WorkerMessage = Union[
    Hello, Ready, StartupFailed, Heartbeat, JobProgress, JobPrepared, ModelStarted, ModelDone, JobSucceeded,
    JobFailed,
]
SupervisorMessage = Union[RunJob, CancelJob, Shutdown]


# --- process start-up ----------------------------------------------------------------


class WorkerSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything the worker needs to start, handed over in its environment.

    Contains no secret: the worker never sees auth or callback tokens.
    """

    worker_id: str
    endpoint: str
    parent_pid: int
    node_id: str
    backend: str
    device: str
    heartbeat_interval_s: float
    max_pixels: int
    log_level: str = "INFO"
    model_version: str | None = None
    # Relative paths in backend settings are relative to the config file's folder.
    config_dir: str = "."
    # Backend settings as plain data (the `model.<backend>` config section).
    backend_settings: dict = {}


SPEC_ENV = "GPU_SERVER_WORKER_SPEC"


def encode_spec(spec: WorkerSpec) -> str:
    return msgspec.json.encode(spec).decode()


def decode_spec(text: str) -> WorkerSpec:
    return msgspec.json.decode(text, type=WorkerSpec)
