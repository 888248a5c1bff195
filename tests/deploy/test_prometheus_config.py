"""The scrape config and alert rules of deploy/prometheus/, checked by promtool itself."""

from __future__ import annotations

from tests.support.prometheus import DEPLOY, promtool, with_authorization

RULES = DEPLOY / "gpu-server-rules.yml"
ALERTS = {
    "GpuServerDown", "GpuServerNotReady", "GpuServerWorkerRestartingOften", "GpuServerCallbacksFailing",
    "GpuServerSpoolGrowing", "GpuServerGpuMemoryNearFull", "GpuServerNvmlDown", "GpuServerRecycleFailed",
}


def test_promtool_check_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_the_issue_asks_for_is_there():
    import yaml

    (group,) = yaml.safe_load(RULES.read_text())["groups"]
    assert {rule["alert"] for rule in group["rules"]} == ALERTS


def test_the_alerts_fire_on_their_series_and_not_on_look_alikes():
    # promtool's rule unit tests: synthetic series in, expected alerts (labels, texts) out.
    result = promtool("test", "rules", "tests/deploy/gpu-server-rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_of_the_shipped_file_as_it_is():
    # No token file needed: the bearer token block ships commented out, for nodes that
    # keep /metrics open (the default).
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config_with_the_bearer_token_block_turned_on(tmp_path):
    token_file = tmp_path / "gpu-server-metrics.token"
    token_file.write_text("scrape-token")
    text = with_authorization((DEPLOY / "prometheus.yml").read_text())
    assert "credentials_file: /etc/prometheus/gpu-server-metrics.token" in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace("/etc/prometheus/gpu-server-metrics.token", str(token_file)))
    (tmp_path / "gpu-server-rules.yml").write_text((DEPLOY / "gpu-server-rules.yml").read_text())
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
