"""Rules between the config's keys (supervisor/config/rules.py): each judged when every key it
reads is valid, and only then."""

from __future__ import annotations

import pytest

from supervisor import config as cfg
from tests.support.config_text import MINIMAL, problems_of


@pytest.mark.parametrize("url", ["ftp://x/cb", "127.0.0.1:9/cb", "http:///nohost"])
def test_callback_url_must_be_http_with_a_host(url):
    problems = problems_of(MINIMAL.replace("http://127.0.0.1:9/cb", url))
    assert problems == ["callback.url: must be an http:// or https:// URL with a host (line 4)"]


@pytest.mark.parametrize("url", ["ftp://x/events", "127.0.0.1:9/events", "http:///nohost"])
def test_events_url_must_be_http_with_a_host(url):
    problems = problems_of(MINIMAL + f"events: {{url: '{url}', timeout_s: 0}}\n")
    assert problems == [
        "events.timeout_s: Expected `float` > 0.0 (line 5)",
        "events.url: must be an http:// or https:// URL with a host (line 5)",
    ]


def test_image_limit_larger_than_the_body_limit_is_an_error():
    problems = problems_of(MINIMAL + "images: {max_bytes: 2000}\nserver: {max_body_bytes: 1024}\n")
    assert problems[0].startswith("images.max_bytes:")


def test_a_heartbeat_timeout_not_longer_than_the_interval_is_refused():
    problems = problems_of(MINIMAL + "worker: {heartbeat_interval_s: 5, heartbeat_timeout_s: 5}\n")
    assert any(p.startswith("worker.heartbeat_timeout_s:") for p in problems)


def with_secret(secret: str) -> str:
    return MINIMAL.replace("token: t}", f"token: t, signing_secret: '{secret}'}}")


def test_signing_secret_must_be_whsec_and_base64():
    assert cfg.parse(with_secret("whsec_MDEyMzQ1Njc4OWFiY2RlZg=="), {}).callback.signing_secret
    (problem,) = problems_of(with_secret("not-a-secret"))
    assert problem.startswith("callback.signing_secret: must start with whsec_")
    (problem,) = problems_of(with_secret("whsec_%%%"))
    assert problem.startswith("callback.signing_secret:") and "base64" in problem


def test_spool_retry_max_not_below_the_initial_delay():
    (problem,) = problems_of(MINIMAL + "spool: {retry_initial_s: 60, retry_max_s: 10}\n")
    assert problem.startswith("spool.retry_max_s:")


def test_step_limits_the_wrong_way_round_are_refused():
    assert problems_of(MINIMAL + "limits: {steps: [8, 4]}\n") == [
        "limits.steps: the minimum (8) is above the maximum (4); write [min, max] (line 5)",
    ]


def test_the_reference_backends_default_steps_must_lie_within_the_step_limits():
    (problem,) = problems_of(MINIMAL + "limits: {steps: [1, 4]}\n")  # default_steps: 8
    assert problem == ("model.reference.default_steps: 8 (the steps of a job that names none) "
                       "is outside limits.steps [1, 4]")
    # Another backend does not read it.
    assert cfg.parse(MINIMAL + "limits: {steps: [1, 4]}\nworker: {backend: 'pkg.mod:Cls'}\n", {}).limits.steps == (1, 4)


def test_a_rule_that_reads_a_broken_key_is_not_judged():
    # max_body_bytes is broken: whether max_bytes fits under it cannot be told.
    problems = problems_of(MINIMAL + "images: {max_bytes: 2000}\nserver: {max_body_bytes: 10}\n")
    assert [p.split(":")[0] for p in problems] == ["server.max_body_bytes"]


def test_the_comfyui_backend_needs_its_settings():
    assert problems_of(MINIMAL + "worker: {backend: comfyui}\n") == [
        "model.comfyui: required when worker.backend is comfyui",
    ]
