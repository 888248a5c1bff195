"""The config's keys (supervisor/config/sections.py): the contract's defaults, each key's
type and limits, the backend's own section."""

from __future__ import annotations

import pytest

from supervisor import config as cfg
from tests.support.config_text import MINIMAL, problems_of


def test_minimal_file_gets_the_contract_defaults():
    config = cfg.parse(MINIMAL, {})
    assert config.server.host == "127.0.0.1" and config.server.port == 8080
    assert config.server.max_body_bytes == 50 * cfg.MiB
    assert config.callback.timeout_s == 10 and config.callback.max_retries == 3
    assert config.queue.max_pending == 0
    assert config.images.max_bytes == 20 * cfg.MiB and config.images.max_pixels == 36_000_000
    assert config.images.output_format == "png"
    assert config.worker.backend == "reference" and config.worker.device == "auto"
    assert config.worker.max_backoff_s == 60 and config.worker.healthy_after_s == 60
    assert config.worker.inference_timeout_s == 600 and config.worker.heartbeat_timeout_s == 30
    assert config.worker.max_restarts == 10 and config.worker.restart_window_s == 600
    assert config.worker.retry_crashed_jobs is False
    assert config.worker.overlap == "auto" and config.worker.overlap_margin_bytes == 2147483648
    assert config.spool.dir is None and config.spool.max_age_s == 604800
    assert config.spool.retry_initial_s == 30 and config.spool.retry_max_s == 600
    assert config.callback.signing_secret is None
    assert config.jobs.retention_s == 3600 and config.shutdown.drain_timeout_s == 60
    assert config.logging.level == "INFO" and config.metrics.token is None
    assert config.events.url is None and config.events.token is None
    assert config.events.timeout_s == 2 and config.events.min_interval_s == 1
    assert config.images.output_size == "person" and config.limits.steps == (1, 100)


def test_short_tokens_are_refused():
    problems = problems_of(MINIMAL.replace("0123456789abcdef", "short"))
    assert problems[0].startswith("auth.tokens[0]:")


@pytest.mark.parametrize("backend", ["reference", "comfyui", "tests.support.backends:Flaky", "pkg.mod:Class"])
def test_backend_by_name_or_import_path(backend):
    extra = "model: {comfyui: {path: /opt/ComfyUI}}\n" if backend == "comfyui" else ""
    config = cfg.parse(MINIMAL + f"worker: {{backend: '{backend}'}}\n" + extra, {})
    assert config.worker.backend == backend


def test_backend_settings_are_the_section_of_the_chosen_backend():
    config = cfg.parse(MINIMAL + "model: {reference: {default_steps: 3}, custom: {crash: true}}\n", {})
    assert config.backend_settings() == {"default_steps": 3}
    custom = cfg.parse(MINIMAL + "worker: {backend: 'a.b:C'}\nmodel: {custom: {crash: true}}\n", {})
    assert custom.backend_settings() == {"crash": True}


def test_overlap_is_auto_always_or_never_and_its_margin_not_negative():
    assert cfg.parse(MINIMAL + "worker: {overlap: never, overlap_margin_bytes: 0}\n", {}).worker.overlap == "never"
    problems = problems_of(MINIMAL + "worker: {overlap: sometimes, overlap_margin_bytes: -1}\n")
    assert any(p.startswith("worker.overlap:") for p in problems), problems
    assert any(p.startswith("worker.overlap_margin_bytes:") for p in problems), problems


def test_output_size_is_person_or_model():
    assert cfg.parse(MINIMAL + "images: {output_size: model}\n", {}).images.output_size == "model"
    (problem,) = problems_of(MINIMAL + "images: {output_size: original}\n")
    assert problem == "images.output_size: Invalid enum value 'original'; allowed: 'person', 'model' (line 5)"


def test_a_bad_enum_value_names_the_values_allowed():
    (problem,) = problems_of(MINIMAL + "logging: {level: LOUD}\n")
    assert problem == "logging.level: Invalid enum value 'LOUD'; allowed: 'DEBUG', 'INFO', 'WARNING', 'ERROR' (line 5)"


def test_step_limits_are_a_min_and_max_within_1_to_100():
    config = cfg.parse(MINIMAL + "limits: {steps: [4, 4]}\nmodel: {reference: {default_steps: 4}}\n", {})
    assert config.limits.steps == (4, 4)
    assert problems_of(MINIMAL + "limits: {steps: [0, 4]}\n") == ["limits.steps[0]: Expected `int` >= 1 (line 5)"]
    assert problems_of(MINIMAL + "limits: {steps: [1, 101]}\n") == ["limits.steps[1]: Expected `int` <= 100 (line 5)"]
    assert problems_of(MINIMAL + "limits: {steps: [4]}\n") == [
        "limits.steps: Expected `array` of length 2, got 1 (line 5)",
    ]
    assert problems_of(MINIMAL + "limits: {steps: 4}\n") == ["limits.steps: Expected `array`, got `int` (line 5)"]
