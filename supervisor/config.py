"""The node's configuration: one YAML file, `${VAR}` expansion, typed validation.

Validation is msgspec's, section by section, so one bad file reports a problem in every
section that has one (msgspec itself stops at the first problem inside a section).
Every problem carries its key path: `server.port: Expected int >= 1, got 0`.
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

from supervisor import signing

MiB = 1024 * 1024
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


class AuthConfig(Section):
    tokens: Annotated[list[Annotated[str, Meta(min_length=16)]], Meta(min_length=1)]


class CallbackConfig(Section):
    url: str
    token: Annotated[str, Meta(min_length=1)]
    timeout_s: Seconds = 10.0
    max_retries: Annotated[int, Meta(ge=0, le=20)] = 3
    # Standard Webhooks secret (`whsec_<base64>`); unset: callbacks are not signed.
    signing_secret: str | None = None


class QueueConfig(Section):
    max_pending: Annotated[int, Meta(ge=0, le=10_000)] = 0


class ImagesConfig(Section):
    max_bytes: Annotated[int, Meta(ge=1)] = 20 * MiB
    max_pixels: Annotated[int, Meta(ge=1)] = 36_000_000
    output_format: OutputFormat = "png"


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
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

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
    """One or more problems, each as `key.path: what is wrong`."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def resolve_path(cli_path: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    return Path(cli_path or environ.get(PATH_ENV) or DEFAULT_PATH)


def load(path: Path | str, environ: Mapping[str, str] = os.environ) -> LoadedConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc.strerror or exc})"])
    return LoadedConfig(parse(text, environ), path.resolve())


def parse(text: str, environ: Mapping[str, str] = os.environ) -> Config:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"(file): not valid YAML: {exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(["(file): the top level must be a mapping of keys"])
    problems: list[str] = []
    data = _expand(data, "", environ, problems)
    # A section with an unset variable is not converted too: one problem, told once.
    broken = {p.split(":", 1)[0].split(".", 1)[0].split("[", 1)[0] for p in problems}
    config = _convert(data, problems, skip=broken)
    if config is not None:
        _check_semantics(config, problems)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


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


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _problem(section: str, exc: msgspec.ValidationError) -> str:
    match = _AT.match(str(exc))
    assert match is not None
    sub = match.group("path") or ""
    where = section + re.sub(r"^\.", ".", sub) if sub else section
    return f"{where}: {match.group('msg')}"


def _convert(data: dict, problems: list[str], skip: set[str]) -> Config | None:
    """Convert each top-level key on its own, so every section's first problem is seen."""
    fields = {f.name: f for f in msgspec.structs.fields(Config)}
    values: dict[str, Any] = {}
    for key in data:
        if key not in fields:
            problems.append(f"{key}: unknown key (known: {', '.join(sorted(fields))})")
    for name, f in fields.items():
        if name in skip:
            continue
        if name not in data:
            if f.required:
                problems.append(f"{name}: required")
            continue
        raw = data[name]
        if raw is None and f.type is not type(None):
            raw = {} if not f.required else raw
        try:
            # strict=False: a `${PORT}` expanded to "8080" still becomes the int 8080.
            values[name] = msgspec.convert(raw, f.type, strict=False)
        except msgspec.ValidationError as exc:
            problems.append(_problem(name, exc))
    if problems:
        return None
    return Config(**values)


def _check_semantics(config: Config, problems: list[str]) -> None:
    url = urlsplit(config.callback.url)
    if url.scheme not in ("http", "https") or not url.hostname:
        problems.append("callback.url: must be an http:// or https:// URL with a host")
    if config.images.max_bytes > config.server.max_body_bytes:
        problems.append(
            "images.max_bytes: larger than server.max_body_bytes, so it could never apply"
        )
    if config.worker.heartbeat_timeout_s <= config.worker.heartbeat_interval_s:
        problems.append(
            "worker.heartbeat_timeout_s: must be longer than worker.heartbeat_interval_s"
        )
    if config.callback.signing_secret is not None:
        try:
            signing.parse_secret(config.callback.signing_secret)
        except signing.BadSecret as exc:
            problems.append(f"callback.signing_secret: {exc}")
    if config.spool.retry_max_s < config.spool.retry_initial_s:
        problems.append("spool.retry_max_s: must not be shorter than spool.retry_initial_s")
    if config.worker.backend == "comfyui" and not config.model.comfyui:
        problems.append("model.comfyui: required when worker.backend is comfyui")
