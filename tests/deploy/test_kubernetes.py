"""deploy/k8s: rendered by kustomize, every core kind validated against the newest Kubernetes
schemas kubernetes-validate bundles, the PodMonitor against the prometheus-operator's CRD
schema, and the manifests in step with the node's config and contract."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from supervisor import config
from tests.support.node import REPO
from tests.support.tools import TOOLS, require, run

K8S = REPO / "deploy" / "k8s"
PODMONITOR_CHECK = REPO / "tests" / "deploy" / "podmonitor" / "validate.mjs"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    kubectl = require("kubectl", "the kubectl binary at /usr/bin/kubectl on development and CI machines")
    result = run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def one(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_the_base_renders_every_kind_the_deployment_needs(rendered):
    assert sorted(d["kind"] for d in rendered) == [
        "ConfigMap", "PodDisruptionBudget", "PodMonitor", "Service", "StatefulSet",
    ]


def test_every_core_kind_is_valid_for_the_newest_kubernetes(rendered):
    from kubernetes_validate import utils

    version = utils.latest_version()
    checked = []
    for doc in rendered:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: below
        # strict: an unknown field (a typo) is an error, as `kubectl apply` would make it.
        utils.validate(doc, version, strict=True)
        checked.append(doc["kind"])
    print(f"kubernetes-validate {version}: {', '.join(checked)}")
    assert len(checked) == 4


def test_strict_validation_would_catch_a_typo(rendered):
    from kubernetes_validate import utils

    broken = copy.deepcopy(one(rendered, "StatefulSet"))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(utils.ValidationError):
        utils.validate(broken, utils.latest_version(), strict=True)


def podmonitor_check(docs: list[dict]):
    node = require("node", "Node.js, /usr/bin/node on development and CI machines")
    modules = TOOLS / "podmonitor" / "node_modules"
    if not modules.is_dir():
        pytest.fail(f"the PodMonitor schema is not installed in {modules} (make test installs it)", pytrace=False)
    return run(node, str(PODMONITOR_CHECK), str(modules), stdin=json.dumps(docs))


def test_the_podmonitor_matches_the_prometheus_operator_crd_schema(rendered):
    result = podmonitor_check([one(rendered, "PodMonitor")])
    assert result.returncode == 0 and result.stdout.startswith("ok gpu-server"), result.stdout + result.stderr


def test_the_crd_schema_check_would_catch_a_mistake(rendered):
    broken = copy.deepcopy(one(rendered, "PodMonitor"))
    broken["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    result = podmonitor_check([broken])
    assert result.returncode == 1 and "interval must match pattern" in result.stdout, result.stdout + result.stderr


# --- in step with the node ------------------------------------------------------------


def pod(rendered) -> tuple[dict, dict]:
    spec = one(rendered, "StatefulSet")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def container_env(rendered) -> dict[str, str]:
    """The container's environment as the node sees it: secrets and the pod's name filled in."""
    _, container = pod(rendered)
    env = {}
    for item in container["env"]:
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[item["name"]] = f"secret-{source['secretKeyRef']['key']}-0123456789"
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[item["name"]] = "gpu-server-0"
        else:
            env[item["name"]] = item["value"]
    return env


def node_config(rendered) -> config.LoadedConfig:
    (text,) = one(rendered, "ConfigMap")["data"].values()
    env = container_env(rendered)
    mount = {m["name"]: m["mountPath"] for m in pod(rendered)[1]["volumeMounts"]}["config"]
    assert env["GPU_SERVER_CONFIG"] == f"{mount}/config.yaml"
    return config.LoadedConfig(config.parse(text, env), Path(env["GPU_SERVER_CONFIG"]))


def test_the_configmap_is_a_valid_config_with_the_pods_environment(rendered):
    loaded = node_config(rendered)
    assert loaded.config.node_id == "gpu-server-0"  # the pod's stable name
    assert loaded.config.worker.backend == "comfyui" and loaded.config.worker.device == "cuda:0"


def test_one_gpu_probes_and_a_grace_period_longer_than_the_drain(rendered):
    cfg = node_config(rendered).config
    spec, container = pod(rendered)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/health"
    assert startup["periodSeconds"] * startup["failureThreshold"] > cfg.worker.startup_timeout_s
    assert spec["terminationGracePeriodSeconds"] > cfg.shutdown.drain_timeout_s + cfg.callback.timeout_s
    assert "lifecycle" not in container  # no preStop hook holding up the drain
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == cfg.server.port


def test_the_spool_lives_on_the_pods_own_volume_claim(rendered):
    loaded = node_config(rendered)
    statefulset = one(rendered, "StatefulSet")
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["name"]: m["mountPath"] for m in pod(rendered)[1]["volumeMounts"]}
    assert "spool" in claims and str(loaded.spool_dir) == mounts["spool"]
    assert statefulset["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_service_podmonitor_and_budget_select_the_pods(rendered):
    labels = one(rendered, "StatefulSet")["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in pod(rendered)[1]["ports"]}

    def selects(selector: dict) -> bool:
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    service = one(rendered, "Service")
    assert selects(service["spec"]["selector"]) and service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    assert one(rendered, "StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
    monitor = one(rendered, "PodMonitor")["spec"]
    assert selects(monitor["selector"]["matchLabels"])
    assert {e["port"] for e in monitor["podMetricsEndpoints"]} <= port_names
    assert selects(one(rendered, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
