"""`${VAR}` expansion of the config's values (supervisor/config/expansion.py)."""

from __future__ import annotations

from supervisor import config as cfg
from supervisor.config.expansion import expand
from supervisor.config.check import Problem
from tests.support.config_text import MINIMAL, problems_of


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


def test_every_string_in_nested_mappings_and_lists_is_expanded_and_each_unset_one_named_by_its_path():
    data = {"auth": {"tokens": ["${A}", "plain", "${B}"]}, "server": {"port": 8080, "host": "${H:-::1}"}}
    expanded, problems = expand(data, {"A": "token-a"})
    assert expanded == {"auth": {"tokens": ["token-a", "plain", ""]}, "server": {"port": 8080, "host": "::1"}}
    assert problems == [Problem("auth.tokens[2]", "environment variable B is not set and has no default")]
