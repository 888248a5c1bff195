"""deploy/systemd/gpu-server@.service: verified by systemd itself, and in step with the config."""

from __future__ import annotations

import re

import pytest

from supervisor import config
from tests.support.node import GPU_SERVER, REPO
from tests.support.tools import require, run

UNIT = REPO / "deploy" / "systemd" / "gpu-server@.service"
WHERE = "Debian package systemd; /usr/bin/systemd-analyze"


def unit_pointing_at_this_venv(tmp_path, text: str | None = None):
    """A copy whose ExecStart is this checkout's gpu-server (verify refuses a missing binary),
    and instance 0 of it: systemd verifies instances, not templates."""
    text = UNIT.read_text() if text is None else text
    copy = tmp_path / "gpu-server@.service"
    copy.write_text(re.sub(r"^ExecStart=\S+", f"ExecStart={GPU_SERVER}", text, flags=re.M))
    instance = tmp_path / "gpu-server@0.service"
    instance.symlink_to(copy.name)
    return instance


def test_systemd_analyze_verify_finds_nothing(tmp_path):
    analyze = require("systemd-analyze", WHERE)
    result = run(analyze, "verify", str(unit_pointing_at_this_venv(tmp_path)))
    # verify exits 0 on an unknown key too, and only says so: any output is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_verify_would_see_a_mistake(tmp_path):
    analyze = require("systemd-analyze", WHERE)
    broken = UNIT.read_text().replace("Restart=on-failure", "Restrt=on-failure")
    result = run(analyze, "verify", str(unit_pointing_at_this_venv(tmp_path, broken)))
    assert "Unknown key 'Restrt'" in result.stderr


def test_hardening_exposure_stays_low(tmp_path):
    analyze = require("systemd-analyze", WHERE)
    result = run(analyze, "security", "--offline=true", "--no-pager", str(unit_pointing_at_this_venv(tmp_path)))
    match = re.search(r"Overall exposure level for gpu-server@0.service: ([\d.]+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    print(f"systemd-analyze security: exposure {match.group(1)}")
    assert float(match.group(1)) <= 4.0  # "OK" on systemd's scale; CUDA rules out the rest


def service_section() -> dict[str, list[str]]:
    """[Service] as key -> every value given (systemd keys repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_one_gpu_per_instance_signals_and_exit_codes():
    service = service_section()
    assert "CUDA_VISIBLE_DEVICES=%i" in service["Environment"]
    assert service["EnvironmentFile"][-1] == "/etc/gpu-server/%i.env"
    assert service["KillSignal"] == ["SIGTERM"] and service["KillMode"] == ["mixed"]
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["Restart"] == ["on-failure"] and service["RestartPreventExitStatus"] == ["2"]
    # /dev/nvidia* stay reachable: no device allow-list, neither given nor implied. (Before
    # systemd 252, ProtectClock=yes implies DeviceAllow=char-rtc r, which closes every other
    # device: CUDA finds no GPU on Ubuntu 22.04's systemd 249.)
    for key in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert key not in service, key


def test_enough_file_descriptors_for_the_connections_a_neighbour_can_hold():
    # Each connection is a descriptor, and an idle kept-alive one lasts 120 s: within the
    # default soft limit of a service (1024), one client on the network could leave the
    # node none for the spool, the callbacks or the worker's next start.
    service = service_section()
    assert int(service["LimitNOFILE"][0]) >= 65536


def test_the_production_config_fits_the_unit():
    service = service_section()
    instance_env = dict(
        line.split("=", 1) for line in (REPO / "deploy/systemd/0.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    common_env = dict(
        line.split("=", 1) for line in (REPO / "deploy/systemd/common.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    loaded = config.load(REPO / "conf" / "config.production.yaml", {**common_env, **instance_env})
    cfg = loaded.config
    assert str(loaded.spool_dir) == instance_env["GPU_SERVER_SPOOL_DIR"]
    assert loaded.spool_dir.is_relative_to("/var/lib/gpu-server/0")  # StateDirectory=gpu-server/%i
    assert cfg.server.port == int(instance_env["GPU_SERVER_PORT"]) and cfg.node_id == instance_env["GPU_SERVER_NODE_ID"]
    assert cfg.worker.device == "cuda:0"  # the one GPU CUDA_VISIBLE_DEVICES leaves
    grace = float(service["TimeoutStopSec"][0])
    assert grace > cfg.shutdown.drain_timeout_s + cfg.callback.timeout_s


@pytest.mark.parametrize("name", ["0.env.example", "common.env.example"])
def test_the_example_environment_files_set_only_what_the_config_reads(name):
    used = set(re.findall(r"\$\{(\w+)", (REPO / "conf" / "config.production.yaml").read_text()))
    lines = (REPO / "deploy" / "systemd" / name).read_text().splitlines()
    keys = {line.split("=", 1)[0] for line in lines if line and not line.startswith("#")}
    assert keys <= used, keys - used
