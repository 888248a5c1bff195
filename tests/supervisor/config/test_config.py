"""Loading and parsing a config file (supervisor/config/__init__.py): every problem at once,
each with its line; the path looked up; what a broken file still tells. The keys themselves:
test_config_sections.py; `${VAR}`: test_config_expansion.py; rules between keys:
test_config_rules.py."""

from __future__ import annotations

import pytest

from supervisor import config as cfg
from tests.support.config_text import MINIMAL, problems_of


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


def test_the_error_keeps_a_view_of_the_valid_part_for_further_checks():
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.parse(MINIMAL + "server: {port: 0}\nspool: {dir: /srv/spool}\n", {})
    view = caught.value.view
    assert view.spool.dir == "/srv/spool" and view.worker.backend == "reference"
    assert caught.value.details[0].line == 5
