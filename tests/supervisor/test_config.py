from __future__ import annotations

import textwrap

import pytest

from supervisor import config as cfg

MINIMAL = """
node_id: node-1
auth: {tokens: ["0123456789abcdef"]}
callback: {url: "http://127.0.0.1:9/cb", token: t}
"""


def problems_of(text: str, env: dict | None = None) -> list[str]:
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.parse(textwrap.dedent(text), env or {})
    return caught.value.problems


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


def test_environment_expansion_with_defaults_and_type_conversion():
    text = MINIMAL + 'server: {port: "${PORT:-9000}", host: "${HOST}"}\nqueue: {max_pending: "${Q}"}\n'
    config = cfg.parse(text, {"HOST": "0.0.0.0", "Q": "3"})
    assert config.server.port == 9000  # the string from the default became an int
    assert config.server.host == "0.0.0.0"
    assert config.queue.max_pending == 3


def test_dollar_dollar_is_a_literal_dollar():
    config = cfg.parse(MINIMAL.replace("token: t", 'token: "a$$b${X}"'), {"X": "c"})
    assert config.callback.token == "a$bc"


def test_unset_variable_without_default_is_an_error_naming_key_and_variable():
    problems = problems_of(MINIMAL.replace("token: t", 'token: "${SECRET}"'))
    assert problems == ["callback.token: environment variable SECRET is not set and has no default (line 4)"]


def test_every_section_reports_its_problem():
    problems = problems_of(
        """
        node_id: "bad id"
        server: {port: 0}
        auth: {tokens: []}
        callback: {url: "http://x/cb", token: t, timeout_s: -1}
        worker: {device: gpu, backend: "not a path"}
        unknown_section: {}
        """
    )
    keys = {p.split(":")[0] for p in problems}
    assert keys == {
        "node_id", "server.port", "auth.tokens", "callback.timeout_s", "worker.device", "worker.backend",
        "unknown_section",
    }


def test_unknown_keys_inside_a_section_are_rejected():
    problems = problems_of(MINIMAL + "server: {prot: 1}\n")
    assert problems == ["server.prot: unknown key; did you mean 'port'? (line 5)"]


def test_required_keys():
    problems = problems_of("node_id: n\n")
    assert {p.split(":")[0] for p in problems} == {"auth", "callback"}


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


def test_short_tokens_are_refused():
    problems = problems_of(MINIMAL.replace("0123456789abcdef", "short"))
    assert problems[0].startswith("auth.tokens[0]:")


def test_image_limit_larger_than_the_body_limit_is_an_error():
    problems = problems_of(MINIMAL + "images: {max_bytes: 2000}\nserver: {max_body_bytes: 1024}\n")
    assert problems[0].startswith("images.max_bytes:")


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


def test_not_yaml_and_not_a_mapping():
    assert problems_of("key: [unclosed")[0].startswith("(file): not valid YAML")
    assert problems_of("- a\n- b\n") == ["(file): the top level must be a mapping of keys"]


def test_load_resolves_the_path_and_reports_a_missing_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(MINIMAL)
    loaded = cfg.load(path, {})
    assert loaded.path == path.resolve() and loaded.base_dir == tmp_path.resolve()
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(tmp_path / "missing.yaml", {})
    assert "missing.yaml" in caught.value.problems[0]


def test_resolve_path_order():
    assert str(cfg.resolve_path("a.yaml", {cfg.PATH_ENV: "b.yaml"})) == "a.yaml"
    assert str(cfg.resolve_path(None, {cfg.PATH_ENV: "b.yaml"})) == "b.yaml"
    assert str(cfg.resolve_path(None, {})) == cfg.DEFAULT_PATH


def test_a_heartbeat_timeout_not_longer_than_the_interval_is_refused():
    problems = problems_of(MINIMAL + "worker: {heartbeat_interval_s: 5, heartbeat_timeout_s: 5}\n")
    assert any(p.startswith("worker.heartbeat_timeout_s:") for p in problems)


def test_overlap_is_auto_always_or_never_and_its_margin_not_negative():
    assert cfg.parse(MINIMAL + "worker: {overlap: never, overlap_margin_bytes: 0}\n", {}).worker.overlap == "never"
    problems = problems_of(MINIMAL + "worker: {overlap: sometimes, overlap_margin_bytes: -1}\n")
    assert any(p.startswith("worker.overlap:") for p in problems), problems
    assert any(p.startswith("worker.overlap_margin_bytes:") for p in problems), problems


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


def test_spool_dir_defaults_beside_the_config_file_and_relative_paths_follow_it(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text(MINIMAL)
    assert cfg.load(path).spool_dir == tmp_path / "spool"
    path.write_text(MINIMAL + "spool: {dir: var/results}\n")
    assert cfg.load(path).spool_dir == tmp_path / "var" / "results"
    path.write_text(MINIMAL + "spool: {dir: /srv/spool}\n")
    assert str(cfg.load(path).spool_dir) == "/srv/spool"


def test_every_problem_inside_one_section_at_once_with_lines():
    problems = problems_of(MINIMAL + "server:\n  port: 0\n  hots: x\n  max_body_bytes: 10\n")
    assert problems == [
        "server.port: Expected `int` >= 1 (line 6)",
        "server.hots: unknown key; did you mean 'host'? (line 7)",
        "server.max_body_bytes: Expected `int` >= 1024 (line 8)",
    ]


def test_a_rule_between_valid_keys_is_reported_beside_an_unrelated_problem():
    problems = problems_of(MINIMAL + "spool: {retry_initial_s: 60, retry_max_s: 10}\nworker: {device: tpu}\n")
    assert [p.split(":")[0] for p in problems] == ["spool.retry_max_s", "worker.device"]


def test_a_rule_that_reads_a_broken_key_is_not_judged():
    # max_body_bytes is broken: whether max_bytes fits under it cannot be told.
    problems = problems_of(MINIMAL + "images: {max_bytes: 2000}\nserver: {max_body_bytes: 10}\n")
    assert [p.split(":")[0] for p in problems] == ["server.max_body_bytes"]


def test_the_error_keeps_a_view_of_the_valid_part_for_further_checks():
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.parse(MINIMAL + "server: {port: 0}\nspool: {dir: /srv/spool}\n", {})
    view = caught.value.view
    assert view.spool.dir == "/srv/spool" and view.worker.backend == "reference"
    assert caught.value.details[0].line == 5


def test_output_size_is_person_or_model():
    assert cfg.parse(MINIMAL + "images: {output_size: model}\n", {}).images.output_size == "model"
    (problem,) = problems_of(MINIMAL + "images: {output_size: original}\n")
    assert problem == "images.output_size: Invalid enum value 'original' (line 5)"


def test_step_limits_are_a_min_and_max_within_1_to_100():
    config = cfg.parse(MINIMAL + "limits: {steps: [4, 4]}\nmodel: {reference: {default_steps: 4}}\n", {})
    assert config.limits.steps == (4, 4)
    assert problems_of(MINIMAL + "limits: {steps: [0, 4]}\n") == ["limits.steps[0]: Expected `int` >= 1 (line 5)"]
    assert problems_of(MINIMAL + "limits: {steps: [1, 101]}\n") == ["limits.steps[1]: Expected `int` <= 100 (line 5)"]
    assert problems_of(MINIMAL + "limits: {steps: [4]}\n") == [
        "limits.steps: Expected `array` of length 2, got 1 (line 5)",
    ]
    assert problems_of(MINIMAL + "limits: {steps: 4}\n") == ["limits.steps: Expected `array`, got `int` (line 5)"]


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
