"""deploy/docker/Dockerfile, built and run: the test image of `make image-test` (the same
Dockerfile on a CPU Debian base with the CPU torch, and the vendored ComfyUI the tests use;
deploy/docker/build_test_image.py) started as Kubernetes starts it, the callback receiver on
the host. What it cannot show: the CUDA base and a GPU (README, "Container image")."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.support import images
from tests.support.client import start_long_job, submit, tryon_form
from tests.support.container import SPOOL, STOP_TIMEOUT_S, TESTS_ROOT, ContainerNode, docker_or_skip, image_config
from tests.support.container import test_mounts as repo_mounts
from tests.support.container import write_config
from tests.support.node import REPO, TOKEN, free_port
from tests.support.receiver import Reply
from tests.support.tools import require, run

pytestmark = pytest.mark.timeout(900)  # the first test also builds the image
NEW_TOKEN = "rotated-token-0123456789abcdef"
QWEN_WORKFLOW = "qwen_image_edit_tryon.json"
PERSON_SIZE = (384, 512)
PERSON, GARMENT = images.person(*PERSON_SIZE), images.garment()


@pytest.fixture(scope="module")
def docker():
    with docker_or_skip() as engine:
        yield engine


@pytest.fixture(scope="module")
def image(docker):
    from deploy.docker import build_test_image

    return build_test_image.build(docker)


@pytest.fixture(scope="module")
def inspected(docker, image):
    return image_config(docker, image["tag"])


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
def volume(docker):
    name = f"gpu-server-test-spool-{uuid.uuid4().hex[:10]}"
    docker("volume", "create", name)
    yield name
    docker("volume", "rm", "-f", name, check=False)


@pytest.fixture
def containers():
    started: list[ContainerNode] = []
    yield started
    for node in started:
        node.remove()


def container(docker, image, tmp_path, callback_url, containers, volume, overrides=None, **kwargs) -> ContainerNode:
    workdir = tmp_path / f"c{len(containers)}"
    workdir.mkdir()
    node = ContainerNode(docker, image["tag"], workdir, callback_url, overrides, volume=volume, **kwargs)
    containers.append(node)
    return node


def test_the_image_says_what_it_is(docker, image, inspected):
    version = image["version"]
    print(f"\n{image['tag']}: gpu-server --version: {version}; git_commit {image['git_commit']}; "
          f"{image['size_bytes'] / 2**20:.0f} MiB; built in {image['seconds']} s on {image['base']}")
    assert version.startswith("gpu-server ")
    config = inspected["Config"]
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["/usr/bin/tini", "--", "gpu-server"]
    assert f"GPU_SERVER_GIT_COMMIT={image['git_commit']}" in config["Env"]
    # The base's torch stayed: the CPU build of constraints.txt, not one pip pulled from PyPI.
    torch = docker.text("run", "--rm", "--network", "none", "--entrypoint", "python", image["tag"],
                        "-c", "import torch; print(torch.__version__)")
    assert torch == "2.13.0+cpu"


async def test_as_kubernetes_runs_it_a_job_a_reload_and_a_drain_through_tini(
        docker, image, tmp_path, receiver, http, containers, volume):
    node = container(docker, image, tmp_path, receiver.url, containers, volume).start()
    # uid 10001, the root read-only, tini PID 1, the spool on the volume, healthy.
    assert node.exec("id", "-u").stdout.decode().strip() == "10001"
    assert node.exec("cat", "/proc/1/comm").stdout.decode().strip() == "tini"
    refused = node.exec("touch", "/opt/gpu-server/written")
    assert refused.returncode != 0 and b"Read-only file system" in refused.stderr
    mounts = json.loads(node.inspect("{{json .Mounts}}"))
    assert {m["Destination"]: m["Type"] for m in mounts}[SPOOL] == "volume"
    assert node.get("/health")[0] == 200
    node.wait_healthy()
    code, version = node.get("/version")
    assert code == 200 and version["git_commit"] == image["git_commit"], version

    # A job end to end on the reference backend.
    status, _, body = await submit(http, node.base_url, tryon_form("image-job-1"))
    assert status == 202, body
    (callback,) = await receiver.await_callback("image-job-1")
    assert callback.fields["status"] == "succeeded" and callback.files["output_image"][1] == "image/png"

    # `docker kill -s HUP`: tini hands it on, the node reloads the mounted file.
    write_config(node, {**node.config, "auth": {"tokens": [TOKEN, NEW_TOKEN]}})
    node.signal(signal.SIGHUP)
    reloaded = await asyncio.to_thread(node.wait_event, "config_reloaded")
    assert reloaded["changed"] == ["auth.tokens"]
    status, _, body = await submit(http, node.base_url, tryon_form("image-job-2"), token=NEW_TOKEN)
    assert status == 202, body
    await receiver.await_callback("image-job-2")

    # `docker stop` while a job runs: SIGTERM through tini, the job finishes, its callback
    # arrives, the container exits 0 within the stop timeout.
    await start_long_job(http, node, "image-drained")
    code = await asyncio.to_thread(node.stop)
    assert code == 0, node.tail()
    (drained,) = receiver.for_job("image-drained")
    assert drained.fields["status"] == "succeeded"
    assert node.inspect("{{.State.ExitCode}} {{.State.OOMKilled}}") == "0 false"
    assert [e["signal"] for e in node.events("shutdown_started")] == ["SIGTERM"]


async def test_a_result_survives_kill_and_a_new_container_on_the_volume_delivers_it(
        docker, image, tmp_path, receiver, http, containers, volume):
    closed = f"http://127.0.0.1:{free_port()}/callback"  # the Asset Service is down
    first = container(docker, image, tmp_path, closed, containers, volume,
                      {"callback": {"max_retries": 0}, "spool": {"retry_initial_s": 300}}).start()
    status, _, body = await submit(http, first.base_url, tryon_form("image-survivor"))
    assert status == 202, body
    await asyncio.to_thread(first.wait_event, "spool_written", 60, job_id="image-survivor")
    first.signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.process.wait, 30) == 128 + signal.SIGKILL

    receiver.answer_for["image-survivor"] = lambda: Reply(200)
    second = container(docker, image, tmp_path, receiver.url, containers, volume,
                       {"spool": {"retry_initial_s": 0.5, "retry_max_s": 1.0}}).start()
    (callback,) = await receiver.await_callback("image-survivor")
    assert callback.fields["status"] == "succeeded" and callback.files["output_image"][1] == "image/png"
    await asyncio.to_thread(second.wait_event, "callback_succeeded", 60, job_id="image-survivor")
    assert second.stop() == 0, second.tail()


async def test_the_shipped_qwen_workflow_runs_on_the_images_engine(
        docker, image, tmp_path, receiver, http, containers, volume):
    from bench.qwen_shrink import CI
    from tests.support.qwen import ensure_test_weights, output_image, qwen_settings

    models = ensure_test_weights(CI)
    # The image's ComfyUI and its shipped workflow; the random-weight files at /models.
    # No warm-up (the job itself runs the whole graph): a minute less of CI.
    settings = qwen_settings(Path("/opt/ComfyUI"), Path("/models"), CI,
                             workflow=f"/etc/gpu-server/workflows/{QWEN_WORKFLOW}", warmup=False)
    node = container(docker, image, tmp_path, receiver.url, containers, volume, {
        "worker": {"backend": "tests.support.qwen:QwenTestBackend", "startup_timeout_s": 600, "inference_timeout_s": 300,
                   "max_restarts": 0},  # a worker that cannot start fails the test at once
        "model": {"custom": settings},
    }, mounts={**repo_mounts(), models: "/models"}, env={"PYTHONPATH": TESTS_ROOT})
    node.start(timeout=600)
    status, _, body = await submit(http, node.base_url, tryon_form(
        "image-qwen", person_image=PERSON, garment_image=GARMENT, config={"seed": 7}))
    assert status == 202, body
    (callback,) = await receiver.await_callback("image-qwen", timeout=300)
    assert callback.fields["status"] == "succeeded", callback.fields
    assert output_image(callback).size == PERSON_SIZE
    executed = node.wait_event("comfyui_graph_executed", job_id="image-qwen")
    assert executed["success"] is True
    assert node.stop() == 0, node.tail()


def test_the_statefulset_and_the_image_agree(inspected):
    kubectl = require("kubectl", "the kubectl binary at /usr/bin/kubectl on development and CI machines")
    rendered = run(kubectl, "kustomize", str(REPO / "deploy" / "k8s"))
    assert rendered.returncode == 0, rendered.stderr
    (statefulset,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    (spec,) = pod["containers"]
    config = inspected["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    uid, gid = config["User"].split(":")
    # The user: the pod's numeric user and group are the image's.
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (int(uid), int(gid))
    assert pod["securityContext"]["runAsNonRoot"] is True and int(uid) != 0
    # The process: the image's entry point (tini) with the pod's args.
    assert "command" not in spec and spec["args"] == config["Cmd"]
    # The port the probes ask is the one the image exposes; liveness is the HEALTHCHECK's route.
    (port,) = spec["ports"]
    assert f"{port['containerPort']}/tcp" in config["ExposedPorts"]
    probes = {name: spec[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert {p["port"] for p in probes.values()} == {port["name"]}
    assert probes["livenessProbe"]["path"] == "/health/live"
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "/opt/gpu-server/healthcheck.py"]
    assert "/health/live" in (REPO / "deploy/docker/healthcheck.py").read_text()
    # The mounts: the spool where the image's volume is, the models where its engine looks,
    # the config where GPU_SERVER_CONFIG points, /tmp writable beside a read-only root.
    mounts = {m["mountPath"]: m for m in spec["volumeMounts"]}
    assert list(config["Volumes"]) == [SPOOL] and SPOOL in mounts and not mounts[SPOOL].get("readOnly")
    assert env["COMFYUI_MODELS_DIR"] in mounts and mounts[env["COMFYUI_MODELS_DIR"]]["readOnly"] is True
    spec_env = {e["name"]: e.get("value") for e in spec["env"]}
    config_dir = spec_env["GPU_SERVER_CONFIG"].rsplit("/", 1)[0]
    assert config_dir in mounts and mounts[config_dir]["readOnly"] is True
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True and "/tmp" in mounts
    assert spec_env["HOME"].startswith("/tmp") and spec_env["XDG_CACHE_HOME"].startswith("/tmp")
    # The node's config in the ConfigMap puts the spool on that volume; the stop signal is
    # the one that drains (tini hands it on: the test above).
    (configmap,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "ConfigMap"]
    assert yaml.safe_load(configmap["data"]["config.yaml"])["spool"]["dir"] == SPOOL
    assert config["StopSignal"] == "SIGTERM"
