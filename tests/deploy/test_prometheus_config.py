"""The scrape config and alert rules of deploy/prometheus/, checked by promtool itself."""

from __future__ import annotations

from tests.support.prometheus import DEPLOY, promtool

RULES = DEPLOY / "gpu-server-rules.yml"
ALERTS = {
    "GpuServerDown", "GpuServerNotReady", "GpuServerWorkerRestartingOften", "GpuServerCallbacksFailing",
    "GpuServerSpoolGrowing", "GpuServerGpuMemoryNearFull", "GpuServerNvmlDown",
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


def test_promtool_check_config():
    # --syntax-only: the bearer token file exists on the Prometheus host, not here.
    # The real Prometheus of tests/integration/test_observability.py loads it in full.
    result = promtool("check", "config", "--syntax-only", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
