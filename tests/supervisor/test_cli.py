"""The console script's commands in-process: what they print and their exit codes
(the real process: tests/integration/test_cli.py)."""

from __future__ import annotations

import pytest

from supervisor import cli

GOOD = 'node_id: n-1\nauth: {tokens: ["0123456789abcdef"]}\ncallback: {url: "http://127.0.0.1:9/c", token: t}\n'


def test_check_config_says_what_it_checked(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD)
    assert cli.main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok") and "node_id=n-1" in out and "listen=127.0.0.1:8080" in out


def test_every_problem_goes_to_stderr_with_exit_code_2(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text('node_id: n-1\nserver: {port: 0}\nauth: {tokens: ["short"]}\n')
    assert cli.main(["check-config", "--config", str(path)]) == cli.EXIT_CONFIG == 2
    err = capsys.readouterr().err
    assert f"configuration problem(s) in {path}" in err
    assert "server.port" in err and "auth.tokens[0]" in err and "callback" in err


def test_a_missing_file_is_a_configuration_error(tmp_path, capsys):
    assert cli.main(["check-config", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_a_file_that_is_not_yaml_is_named_once(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("node_id: [unclosed\n")
    assert cli.main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpu-server: 1 configuration problem(s) in {path}:\n  (file): not valid YAML: ")
    assert err.count("(file)") == 1


def test_the_config_path_comes_from_the_environment_without_an_option(tmp_path, capsys, monkeypatch):
    path = tmp_path / "from-env.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("GPU_SERVER_CONFIG", str(path))
    assert cli.main(["check-config"]) == 0
    assert str(path) in capsys.readouterr().out


def test_serve_with_a_bad_config_stops_before_starting_anything(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("node_id: n-1\n")
    assert cli.main(["serve", "--config", str(path)]) == 2
    assert "auth" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["launch"], ["spool", "--config", "x.yaml", "purge"]])
def test_an_unknown_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "usage: gpu-server" in capsys.readouterr().err
