"""The node's configuration: one YAML file, `${VAR}` expansion, typed validation.

The structs below are the schema: a key is one line in its section (its type, limits and
default). `config_check` walks a file along them and reports every problem at once, each
with its key path and line: `server.port: Expected `int` >= 1 (line 7)`; rules between
keys are the functions in RULES.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit

import msgspec
import yaml
from msgspec import Meta, field

from supervisor import config_check, signing
from supervisor.config_check import Problem

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_PATH = "conf/config.yaml"
PATH_ENV = "GPU_SERVER_CONFIG"

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
    inference_timeout_s: Seconds = 600.0
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


class LoadedConfig(msgspec.Struct, frozen=True):
    config: Config
    path: Path

    @property
    def base_dir(self) -> Path:
        """Relative paths in the file are relative to this directory."""
        return self.path.parent

    @property
    def spool_dir(self) -> Path:
        configured = self.config.spool.dir
        return self.base_dir / (configured if configured else "spool")


class ConfigError(Exception):
    """One or more problems, each as `key.path: what is wrong (line N)`."""

    def __init__(self, problems: list[str] | list[Problem], view: Any = None) -> None:
        # What the file holds, readable where valid (config_check.PartialView), for
        # check-config's further checks; None when the file could not be parsed.
        self.view = view
        self.details = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        self.problems = [str(p) if isinstance(p, Problem) else p for p in problems]
        super().__init__("\n".join(self.problems))


def resolve_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(cli_path or environ.get(PATH_ENV) or DEFAULT_PATH)


def missing_default_message(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> str | None:
    """When no path was given and the default file is not there: a message naming both
    places a config is looked for (None when a path was given or the file exists)."""
    if cli_path:
        return None
    from_env = environ.get(PATH_ENV)
    if from_env:
        if Path(from_env).exists():
            return None
        return f"${PATH_ENV} names {from_env}, which does not exist"
    if Path(DEFAULT_PATH).exists():
        return None
    return (
        f"no config file: --config not given, ${PATH_ENV} not set, and no {DEFAULT_PATH} "
        f"in the working directory ({Path.cwd()})"
    )


def load(path: Path | str, environ: Mapping[str, str] = os.environ) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror or exc})"])
    return LoadedConfig(parse(text, environ), path.resolve())


def parse(text: str, environ: Mapping[str, str] = os.environ) -> Config:
    """The typed config, or ConfigError with every problem of the file (each with its line)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"(file): not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(file): the top level must be a mapping of keys"])
    lines = config_check.key_lines(text)
    unset: list[str] = []
    data = _expand(data, "", environ, unset)
    problems = [Problem(*p.split(": ", 1)) for p in unset]
    # A key with an unset variable is not judged again: one problem, told once.
    problems += config_check.check(data, Config, skip=[p.path for p in problems])
    if not problems:
        config = msgspec.convert(config_check.empty_sections_dropped(data, Config), Config, strict=False)
        problems = rule_problems(config)
        if not problems:
            return config
    # Rules between keys are judged on what is valid, so a rule between two good keys is
    # reported in the same round as a problem of a third one.
    view = config_check.PartialView(data, Config, [p.path for p in problems])
    problems += [p for p in rule_problems(view) if p.path not in {q.path for q in problems}]
    raise ConfigError(config_check.locate(problems, lines), view)


_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, key_path: str, environ: Mapping[str, str], problems: list[str]) -> Any:
    """`${VAR}` / `${VAR:-default}` inside string values; `$$` is a literal `$`."""
    if isinstance(value, dict):
        return {
            k: _expand(v, f"{key_path}.{k}" if key_path else str(k), environ, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, f"{key_path}[{i}]", environ, problems) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems.append(f"{key_path}: environment variable {name} is not set and has no default")
        return ""

    return _VAR.sub(substitute, value)


# --- rules between keys -------------------------------------------------------------
# Each rule reads a few keys and returns `key.path: what is wrong`, or None. It runs on a
# view of the file in which a key with a problem of its own raises Broken, so a rule is
# judged exactly when every key it reads is valid. A new rule is one function in RULES.


def _callback_url(config: Config) -> str | None:
    url = urlsplit(config.callback.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        return "callback.url: must be an http:// or https:// URL with a host"
    return None


def _events_url(config: Config) -> str | None:
    if config.events.url is not None:
        url = urlsplit(config.events.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            return "events.url: must be an http:// or https:// URL with a host"
    return None


def _image_limit_within_body_limit(config: Config) -> str | None:
    if config.images.max_bytes > config.server.max_body_bytes:
        return "images.max_bytes: larger than server.max_body_bytes, so it could never apply"
    return None


def _heartbeat_timeout(config: Config) -> str | None:
    if config.worker.heartbeat_timeout_s <= config.worker.heartbeat_interval_s:
        return "worker.heartbeat_timeout_s: must be longer than worker.heartbeat_interval_s"
    return None


def _signing_secret(config: Config) -> str | None:
    if config.callback.signing_secret is not None:
        try:
            signing.parse_secret(config.callback.signing_secret)
        except signing.BadSecret as exc:
            return f"callback.signing_secret: {exc}"
    return None


def _spool_backoff(config: Config) -> str | None:
    if config.spool.retry_max_s < config.spool.retry_initial_s:
        return "spool.retry_max_s: must not be shorter than spool.retry_initial_s"
    return None


def _comfyui_settings_given(config: Config) -> str | None:
    if config.worker.backend == "comfyui" and not config.model.comfyui:
        return "model.comfyui: required when worker.backend is comfyui"
    return None


def _steps_range(config: Config) -> str | None:
    low, high = config.limits.steps
    if low > high:
        return f"limits.steps: the minimum ({low}) is above the maximum ({high}); write [min, max]"
    return None


def _default_steps_within_limits(config: Config) -> str | None:
    # The reference backend's count for a job that names none must be one a job may ask for.
    low, high = config.limits.steps
    steps = config.model.reference.default_steps
    if config.worker.backend == "reference" and low <= high and not low <= steps <= high:
        return (f"model.reference.default_steps: {steps} (the steps of a job that names none) "
                f"is outside limits.steps [{low}, {high}]")
    return None


RULES = [
    _callback_url, _image_limit_within_body_limit, _heartbeat_timeout, _signing_secret, _spool_backoff,
    _comfyui_settings_given, _events_url, _steps_range, _default_steps_within_limits,
]


def rule_problems(view: Any) -> list[Problem]:
    """The rules that can be judged on `view` (a Config, or a PartialView of a broken file)."""
    problems = []
    for rule in RULES:
        try:
            found = rule(view)
        except config_check.Broken:
            continue
        if found is not None:
            problems.append(Problem(*found.split(": ", 1)))
    return problems
