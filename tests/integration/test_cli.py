"""The console script: check-config and serve, with the contract's exit codes."""

from __future__ import annotations

import os
import socket
import subprocess

import yaml

from tests.support.node import GPU_SERVER, REPO, NodeProcess, base_config

BAD_CONFIG = """
node_id: "has spaces"
server: {port: 70000}
auth: {tokens: [short]}
callback: {url: "ftp://nowhere", token: "${UNSET_CALLBACK_TOKEN}"}
worker: {device: tpu}
surprise: true
"""


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(GPU_SERVER), *args], capture_output=True, text=True, timeout=60, cwd=REPO,
        env={**os.environ, **(env or {})},
    )


def test_check_config_accepts_the_shipped_development_config():
    result = run("check-config", "--config", str(REPO / "conf" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_reports_every_problem_with_its_key_path(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    for key in ("node_id:", "server.port:", "auth.tokens[0]:", "callback.token:", "worker.device:", "surprise:"):
        assert key in result.stderr, (key, result.stderr)
    assert "UNSET_CALLBACK_TOKEN" in result.stderr


def test_serve_with_a_bad_config_exits_2_without_listening(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_CONFIG)
    result = run("serve", "--config", str(path))
    assert result.returncode == 2
    assert "server.port:" in result.stderr


def test_missing_config_file_is_a_configuration_error(tmp_path):
    result = run("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2
    assert "absent.yaml" in result.stderr


def test_config_path_and_values_come_from_the_environment(tmp_path):
    config = base_config("${CB_URL}", 8080)
    config["server"]["port"] = "${PORT:-8123}"
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run("check-config", env={"GPU_SERVER_CONFIG": str(path), "CB_URL": "http://127.0.0.1:9/cb"})
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:8123" in result.stdout


def test_serve_exits_1_when_the_port_is_taken(tmp_path, receiver):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        node = NodeProcess(tmp_path, receiver.url)
        config = node.config | {"server": {"host": "127.0.0.1", "port": busy.getsockname()[1]}}
        node.config_path.write_text(yaml.safe_dump(config))
        node.start(wait=False)
        assert node.wait_exit(60) == 1
    assert node.events("startup_failed")


def test_version_and_help_name_the_default_config(tmp_path):
    result = run("--version")
    assert result.returncode == 0 and result.stdout.startswith("gpu-server 0.")
    for args in (["--help"], ["check-config", "--help"]):
        text = " ".join(run(*args).stdout.split())
        assert "$GPU_SERVER_CONFIG" in text and "conf/config.yaml in the working directory" in text, text


def test_a_missing_default_config_names_both_places(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GPU_SERVER_CONFIG"}
    result = subprocess.run([str(GPU_SERVER), "check-config"], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "$GPU_SERVER_CONFIG not set" in result.stderr and "no conf/config.yaml in the working directory" in result.stderr
    result = run("serve", env={"GPU_SERVER_CONFIG": str(tmp_path / "gone.yaml")})
    assert result.returncode == 2 and f"$GPU_SERVER_CONFIG names {tmp_path / 'gone.yaml'}" in result.stderr


def test_check_config_reports_schema_rules_and_files_in_one_round(tmp_path):
    config = base_config("http://127.0.0.1:9/cb", 8080)
    config["server"]["prot"] = 1
    config["spool"] = {"dir": "results", "retry_initial_s": 60, "retry_max_s": 10}
    config["worker"] = {"backend": "comfyui", "device": "tpu"}
    config["model"] = {"comfyui": {
        "path": "no-comfyui", "workflow": "flow.json",
        "inputs": {"person_image": {"node": "1", "input": "image"}, "garment_image": {"node": "2", "input": "image"}},
        "output": {"node": "9", "input": "images"},
    }}
    (tmp_path / "results").write_text("a file where the spool folder should be")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = run("check-config", "--config", str(path))
    assert result.returncode == 2
    found = [line.strip().split(":")[0] for line in result.stderr.splitlines()[1:]]
    assert found == [
        "server.prot", "worker.device", "spool.dir", "spool.retry_max_s", "model.comfyui.path", "model.comfyui.workflow",
    ], result.stderr
    assert "did you mean 'port'?" in result.stderr and "(line " in result.stderr


def spool_with_a_dead_letter(tmp_path):
    from supervisor.delivery.spool import Spool
    from tests.supervisor.delivery.test_spool import put, record

    spool = Spool(tmp_path / "spool")
    spool.open()
    spool.dead_letter(put(spool, record("rejected-1", "msg_r1"), b"r1"))
    put(spool, record("waits", "msg_w"), b"w")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config("http://127.0.0.1:9/cb", 8080)))
    return spool, config


def test_spool_replay_takes_job_ids_after_the_option(tmp_path):
    spool, config = spool_with_a_dead_letter(tmp_path)
    result = run("spool", "replay", "--config", str(config), "rejected-1")
    assert result.returncode == 0, result.stderr
    assert "1 dead letter(s) moved back" in result.stdout
    assert list(spool.dead.iterdir()) == [] and (spool.root / "rejected-1~msg_r1.cb").is_file()


def test_spool_replay_of_an_id_without_a_dead_letter_fails_naming_it(tmp_path):
    spool, config = spool_with_a_dead_letter(tmp_path)
    result = run("spool", "--config", str(config), "replay", "no-such-job", "waits")
    assert result.returncode == 1
    assert "not replayed: no-such-job: no dead letter of this job" in result.stderr
    assert "not replayed: waits: its result waits for delivery already" in result.stderr
    assert (spool.dead / "rejected-1~msg_r1.cb").is_file()  # not asked for: left alone
    assert run("spool", "list", "--config", str(config), "rejected-1").returncode == 2  # list takes no ids
