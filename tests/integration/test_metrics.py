"""/metrics: Prometheus text that prometheus_client's own parser reads, with the contract's names."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.client import submit, tryon_form
from tests.support.node import NodeProcess

REQUIRED = {
    "gpu_server_requests": "counter",
    "gpu_server_request_duration_seconds": "histogram",
    "gpu_server_jobs": "counter",
    "gpu_server_job_queue_seconds": "histogram",
    "gpu_server_job_inference_seconds": "histogram",
    "gpu_server_job_total_seconds": "histogram",
    "gpu_server_callback_attempts": "counter",
    "gpu_server_callback_duration_seconds": "histogram",
    "gpu_server_spool_pending": "gauge",
    "gpu_server_spool_dead": "gauge",
    "gpu_server_busy": "gauge",
    "gpu_server_queue_length": "gauge",
    "gpu_server_worker_up": "gauge",
    "gpu_server_model_loaded": "gauge",
    "gpu_server_worker_restarts": "counter",
    "gpu_server_worker_resident_memory_bytes": "gauge",
    "gpu_server_build_info": "gauge",
}


def scrape(node) -> dict:
    code, text = node.get("/metrics")
    assert code == 200
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families, name, sample_name=None, **labels) -> float:
    for sample in families[name].samples:
        if (sample_name is None or sample.name == sample_name) and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {name} {labels}")


async def test_metrics_after_a_job(node, receiver, http):
    status, _, _ = await submit(http, node.base_url, tryon_form("metrics-job-1"))
    assert status == 202
    await receiver.await_callback("metrics-job-1")
    node.wait_event("callback_succeeded", job_id="metrics-job-1")  # counted by then
    families = scrape(node)
    for name, kind in REQUIRED.items():
        assert name in families, name
        assert families[name].type == kind, (name, families[name].type)

    assert value(families, "gpu_server_jobs", outcome="accepted") == 1
    assert value(families, "gpu_server_jobs", outcome="succeeded") == 1
    assert value(families, "gpu_server_job_total_seconds", "gpu_server_job_total_seconds_count") == 1
    assert value(families, "gpu_server_job_inference_seconds", "gpu_server_job_inference_seconds_count") == 1
    assert value(families, "gpu_server_callback_attempts", result="success") == 1
    assert value(families, "gpu_server_requests", route="/tryon", status="202") == 1
    assert value(families, "gpu_server_busy") == 0
    assert value(families, "gpu_server_worker_up") == 1
    assert value(families, "gpu_server_model_loaded") == 1
    assert value(families, "gpu_server_worker_resident_memory_bytes") > 50 * 1024 * 1024  # torch is loaded there
    build = families["gpu_server_build_info"].samples[0]
    assert build.labels["backend"] == "reference" and build.labels["model_version"] == "reference-1"
    assert build.labels["comfyui"] == "" and build.labels["comfyui_commit"] == ""  # no engine here


def test_no_job_id_ever_appears_in_a_label(node):
    families = scrape(node)
    labels = {v for f in families.values() for s in f.samples for v in s.labels.values()}
    assert not [v for v in labels if "metrics-job" in v]


def test_route_labels_are_templates(node):
    node.get("/no/such/route")
    families = scrape(node)
    routes = {s.labels["route"] for s in families["gpu_server_requests"].samples}
    assert "/no/such/route" not in routes
    assert "unmatched" in routes


@pytest.fixture(scope="module")
def guarded_node(tmp_path_factory, receiver):
    proc = NodeProcess(
        tmp_path_factory.mktemp("metrics-token"), receiver.url, {"metrics": {"token": "scrape-token-123"}}
    ).start()
    yield proc
    assert proc.stop() == 0


def test_metrics_token_wants_a_bearer_header(guarded_node):
    code, body = guarded_node.get("/metrics")
    assert code == 401 and body["error"] == "unauthorized"
    code, _ = guarded_node.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert code == 401
    code, text = guarded_node.get("/metrics", headers={"Authorization": "Bearer scrape-token-123"})
    assert code == 200 and "gpu_server_busy" in text
