"""Observability against real processes: a node that ran jobs, promtool, and a real Prometheus
scraping it with the project's own scrape config (bearer token included) and alert rules."""

from __future__ import annotations

import asyncio

import aiohttp
import pynvml
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.test_grafana_dashboard import exprs, load, metric_names
from tests.deploy.test_prometheus_config import ALERTS
from tests.support.client import submit, tryon_form
from tests.support.node import NodeProcess
from tests.support.prometheus import PrometheusServer, promtool

METRICS_TOKEN = "scrape-token-for-prometheus"
JOBS = ("obs-job-1", "obs-job-2")
# Exported by the spool work (a separate change); the rules and dashboard already use it.
EXPORTED_ELSEWHERE = {"gpu_server_spool_pending"}


def driver_present() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


@pytest.fixture(scope="module")
def node(tmp_path_factory, receiver):
    proc = NodeProcess(tmp_path_factory.mktemp("observed"), receiver.url, {"metrics": {"token": METRICS_TOKEN}})
    proc.start()
    yield proc
    assert proc.stop() == 0, proc.tail()


@pytest.fixture(scope="module")
def jobs_done(node, receiver):
    """The node has run JOBS to the end (callbacks delivered, cleanup done)."""

    async def run_jobs() -> None:
        async with aiohttp.ClientSession() as http:
            for job_id in JOBS:
                status, _, body = await submit(http, node.base_url, tryon_form(job_id))
                assert status == 202, body
                await receiver.await_callback(job_id)

    asyncio.run(run_jobs())
    for job_id in JOBS:
        node.wait_event("callback_succeeded", job_id=job_id)
    return JOBS


def scrape_text(node) -> str:
    code, text = node.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert code == 200, text
    return text


def families(node) -> dict:
    return {f.name: f for f in text_string_to_metric_families(scrape_text(node))}


def test_promtool_accepts_a_real_scrape_after_jobs(node, jobs_done):
    text = scrape_text(node)
    assert 'gpu_server_jobs_total{outcome="succeeded"} 2.0' in text
    result = promtool("check", "metrics", stdin=text)
    # promtool prints lint problems (naming, units, help) and exits 1 on any.
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_worker_and_supervisor_process_figures(node, jobs_done):
    found = families(node)
    assert found["gpu_server_worker_resident_memory_bytes"].samples[0].value > 50 * 2**20  # torch
    (cpu,) = found["gpu_server_worker_cpu_seconds"].samples
    assert cpu.value > 0  # importing torch and two jobs take CPU time
    assert found["process_resident_memory_bytes"].samples[0].value > 0  # the supervisor's own


def test_nvml_state_in_metrics_status_and_log(node):
    present = driver_present()
    for _ in range(3):  # several scrapes: the reason is still logged only once
        found = families(node)
    assert found["gpu_server_nvml_up"].samples[0].value == float(present)
    # The test node computes on the CPU: no GPU of its own to report, driver or not.
    for name in ("gpu_server_gpu_utilization_ratio", "gpu_server_gpu_memory_used_bytes",
                 "gpu_server_gpu_memory_total_bytes", "gpu_server_gpu_temperature_celsius",
                 "gpu_server_gpu_power_watts"):
        assert found[name].type == "gauge" and found[name].samples == [], name
    assert node.gpu_status()["gpus"] == []
    unavailable = node.events("nvml_unavailable")
    if present:
        assert unavailable == [] and len(node.events("nvml_started")) == 1
    else:
        assert len(unavailable) == 1 and "NVMLError" in unavailable[0]["reason"]


def test_dashboard_and_rules_name_only_metrics_the_node_exports(node):
    exported = set(families(node))
    named = set().union(*(metric_names(e) for e in exprs(load())))
    rules = promtool_rule_exprs()
    named |= set().union(*(metric_names(e) for e in rules))
    # Counters and histograms are queried by their sample names.
    bases = {_base(name) for name in named}
    assert not bases - exported - EXPORTED_ELSEWHERE, bases - exported


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, node):
    server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{node.port}", METRICS_TOKEN)
    server.start()
    yield server
    server.stop()


def test_a_real_prometheus_scrapes_the_node(prometheus, jobs_done):
    def succeeded():
        answer = prometheus.query('gpu_server_jobs_total{outcome="succeeded"}')
        results = answer["data"]["result"] if answer.get("status") == "success" else []
        return results if results and float(results[0]["value"][1]) == len(JOBS) else None

    (series,) = prometheus.wait_until(succeeded, "gpu_server_jobs_total{outcome=succeeded} == 2 in Prometheus")
    assert series["metric"]["job"] == "gpu-server"  # the deploy config's job, with its bearer token
    (target,) = prometheus.api("targets")["data"]["activeTargets"]
    assert target["health"] == "up", target


def test_prometheus_loads_the_rules_and_accepts_every_dashboard_query(prometheus, node, jobs_done):
    def rules_evaluated():
        groups = prometheus.api("rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and r["health"] == "ok"
                                      for r in rules) else None

    rules = prometheus.wait_until(rules_evaluated, "every alert rule evaluated")
    assert len(rules) == len(ALERTS)
    # The only alert this healthy node raises: no NVML where there is no driver (pending,
    # as it fires after 15 min); seeing it proves a rule evaluates the node's real series.
    expected = set() if driver_present() else {"GpuServerNvmlDown"}

    def alerts_as_expected():
        alerts = prometheus.api("alerts")["data"]["alerts"]
        return alerts if {a["labels"]["alertname"] for a in alerts} == expected else None

    if expected:
        (alert,) = prometheus.wait_until(alerts_as_expected, "GpuServerNvmlDown pending")
        assert alert["state"] == "pending" and alert["labels"]["instance"] == f"127.0.0.1:{node.port}"
    else:
        assert alerts_as_expected() is not None
    for expr in exprs(load()):
        query = expr.replace("$instance", ".*").replace("$__rate_interval", "1m")
        answer = prometheus.query(query)
        assert answer["status"] == "success", (query, answer)


def promtool_rule_exprs() -> list[str]:
    import yaml

    from tests.deploy.test_prometheus_config import RULES

    return [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _base(sample_name: str) -> str:
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if sample_name.endswith(suffix):
            return sample_name[: -len(suffix)]
    return sample_name
