"""The configuration's keys: one msgspec struct per section of the YAML file.

These structs are the schema: a key is one line in its section (its type, limits and
default); nothing else changes when one is added. `check` walks a file along them
to report every problem at once, and msgspec converts a valid file into them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, field

MiB = 1024 * 1024
GiB = 1024 * MiB

# Same alphabet as the ids of a job: safe in logs, paths and metric-free labels.
NodeId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
Seconds = Annotated[float, Meta(gt=0)]
OutputFormat = Literal["png", "jpeg", "webp"]


class Section(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ServerConfig(Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=1, le=65535)] = 8080
    max_body_bytes: Annotated[int, Meta(ge=1024)] = 50 * MiB
    # Total deadlines, not inactivity timers: a client dribbling a byte at a time is cut off too.
    header_timeout_s: Seconds = 10.0
    body_timeout_s: Seconds = 120.0


class AuthConfig(Section):
    tokens: Annotated[list[Annotated[str, Meta(min_length=16)]], Meta(min_length=1)]


class CallbackConfig(Section):
    url: str
    token: Annotated[str, Meta(min_length=1)]
    timeout_s: Seconds = 10.0
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 3
    # Standard Webhooks secret (`whsec_<base64>`); unset: callbacks are not signed.
    signing_secret: str | None = None


class EventsConfig(Section):
    # Where job.started and job.progress go (best effort); unset: no events are sent.
    url: str | None = None
    # Sent as X-Internal-Auth; unset: callback.token.
    token: Annotated[str, Meta(min_length=1)] | None = None
    timeout_s: Seconds = 2.0
    # job.progress at most once per this many seconds per job.
    min_interval_s: Annotated[float, Meta(ge=0)] = 1.0


class QueueConfig(Section):
    max_pending: Annotated[int, Meta(ge=0, le=10_000)] = 0


class ImagesConfig(Section):
    max_bytes: Annotated[int, Meta(ge=1)] = 20 * MiB
    max_pixels: Annotated[int, Meta(ge=1)] = 36_000_000
    # Width and height each at most this: what every output format can hold (WebP: 16383).
    max_side: Annotated[int, Meta(ge=1)] = 16383
    output_format: OutputFormat = "png"
    # The output's size: `person`, the upright person image's (the model's output resized);
    # `model`, as the workflow made it. Read per job at acceptance: a reload applies at once.
    output_size: Literal["person", "model"] = "person"


StepCount = Annotated[int, Meta(ge=1, le=100)]  # what a job's `steps` may ever be


class LimitsConfig(Section):
    # [min, max] of a job's `steps`, checked at admission (422 naming the range): a workflow
    # trained for a fixed count, like a 4-step Lightning LoRA, narrows it.
    steps: tuple[StepCount, StepCount] = (1, 100)


class WorkerConfig(Section):
    # `reference`, `comfyui`, or `package.module:Class` for a backend of your own.
    backend: Annotated[
        str, Meta(pattern=r"^(reference|comfyui|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
    ] = "reference"
    device: Annotated[str, Meta(pattern=r"^(auto|cpu|cuda|cuda:\d+)$")] = "auto"
    startup_timeout_s: Seconds = 600.0
    # The model stage of a job, counted from its start (a job prepared and waiting spends none).
    inference_timeout_s: Seconds = 600.0
    # A job's prepare (decode) and finish (resize, encode) stages, each.
    stage_timeout_s: Seconds = 120.0
    heartbeat_interval_s: Seconds = 1.0
    heartbeat_timeout_s: Seconds = 30.0
    max_backoff_s: Seconds = 60.0
    healthy_after_s: Seconds = 60.0
    # More unplanned restarts than this within the window: state `failed`, exit 3.
    max_restarts: Annotated[int, Meta(ge=0)] = 10
    restart_window_s: Seconds = 600.0
    # A job whose worker crashed runs once more on the new worker instead of failing.
    retry_crashed_jobs: bool = False
    # A recycle (HUP, USR1) loads the next worker beside the current one, which serves
    # meanwhile: `auto` where the measured free memory allows, `always`, or `never`.
    overlap: Literal["auto", "always", "never"] = "auto"
    # `auto` overlaps when free memory exceeds the current worker's footprint plus this.
    overlap_margin_bytes: Annotated[int, Meta(ge=0)] = 2 * GiB


class ReferenceModelConfig(Section):
    # Steps when a job's config names none; each step is one pass of the compositor.
    default_steps: Annotated[int, Meta(ge=1, le=100)] = 8


class ModelConfig(Section):
    # Reported in callbacks and /version; by default the backend's own name and version.
    version: str | None = None
    reference: ReferenceModelConfig = field(default_factory=ReferenceModelConfig)
    # Settings of the ComfyUI backend, checked by that backend when the worker loads it.
    comfyui: dict[str, Any] = {}
    # Settings for a backend loaded by import path, handed to it as they are.
    custom: dict[str, Any] = {}


class SpoolConfig(Section):
    # Finished results wait here until delivered; default: `spool/` beside the config file.
    dir: str | None = None
    max_age_s: Seconds = 604800.0
    retry_initial_s: Seconds = 30.0
    retry_max_s: Seconds = 600.0
    # How often a running node looks for waiting files it did not write (dead letters moved
    # back by `gpu-server spool replay`); a SIGHUP looks at once.
    rescan_s: Seconds = 10.0


class JobsConfig(Section):
    retention_s: Seconds = 3600.0


class ShutdownConfig(Section):
    drain_timeout_s: Annotated[float, Meta(ge=0)] = 60.0


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class MetricsConfig(Section):
    # When set, /metrics wants `Authorization: Bearer <token>`.
    token: str | None = None


class Config(Section):
    node_id: NodeId
    auth: AuthConfig
    callback: CallbackConfig
    server: ServerConfig = field(default_factory=ServerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    events: EventsConfig = field(default_factory=EventsConfig)

    def backend_settings(self) -> dict[str, Any]:
        """The `model.<backend>` section the worker's backend receives, as plain data."""
        section = {"reference": self.model.reference, "comfyui": self.model.comfyui}.get(
            self.worker.backend, self.model.custom
        )
        return msgspec.to_builtins(section)
