"""The node's configuration: one YAML file, `${VAR}` expansion, typed validation.

The keys are the structs of `sections` (a key is one line in its section: its type, limits
and default); `expansion` fills in `${VAR}`; `rules` holds what is judged between keys.
`parse` reports every problem of a file at once, each with its key path and line
(`check`): `server.port: Expected `int` >= 1 (line 7)`.

Everything the rest of the node reads is importable from here (`from supervisor.config
import Config, LoadedConfig, load`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import msgspec
import yaml

import supervisor.config.check as config_check
from supervisor.config.expansion import expand
from supervisor.config.rules import rule_problems
from supervisor.config.sections import (
    GiB, MiB, AuthConfig, CallbackConfig, Config, EventsConfig, ImagesConfig, JobsConfig, LimitsConfig,
    LoggingConfig, MetricsConfig, ModelConfig, QueueConfig, ReferenceModelConfig, ServerConfig, ShutdownConfig,
    SpoolConfig, WorkerConfig,
)
from supervisor.config.check import Problem

__all__ = [
    "DEFAULT_PATH", "PATH_ENV", "GiB", "MiB", "AuthConfig", "CallbackConfig", "Config", "ConfigError",
    "EventsConfig", "ImagesConfig", "JobsConfig", "LimitsConfig", "LoadedConfig", "LoggingConfig",
    "MetricsConfig", "ModelConfig", "QueueConfig", "ReferenceModelConfig", "ServerConfig", "ShutdownConfig",
    "SpoolConfig", "WorkerConfig", "load", "missing_default_message", "parse", "resolve_path",
]

DEFAULT_PATH = "conf/config.yaml"
PATH_ENV = "GPU_SERVER_CONFIG"


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
        raise ConfigError([Problem("", f"cannot read {path} ({exc.strerror or exc})")])
    return LoadedConfig(parse(text, environ), path.resolve())


def parse(text: str, environ: Mapping[str, str] = os.environ) -> Config:
    """The typed config, or ConfigError with every problem of the file (each with its line)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # A Problem of the file as a whole: it prints as `(file): ...`, once.
        raise ConfigError([Problem("", f"not valid YAML: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem("", "the top level must be a mapping of keys")])
    lines = config_check.key_lines(text)
    data, problems = expand(data, environ)
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
