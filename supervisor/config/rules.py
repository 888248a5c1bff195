"""Rules between keys of the config: what no single key's type can say.

Each rule reads a few keys and returns `key.path: what is wrong`, or None. It runs on a
view of the file in which a key with a problem of its own raises Broken, so a rule is
judged exactly when every key it reads is valid, and a rule between two good keys is
reported in the same round as a problem of a third one. A new rule is one function in RULES.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import supervisor.config.check as config_check
from supervisor.delivery import signing
from supervisor.config.sections import Config
from supervisor.config.check import Problem


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
