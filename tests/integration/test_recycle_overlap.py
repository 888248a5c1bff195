"""A recycle with overlap through the real node: under steady traffic a SIGUSR1 or a SIGHUP
costs not one 503, every accepted job is delivered, and each callback carries the model
version of the worker that ran it. A next worker that cannot load leaves the current one
serving; without overlap (`never`, or `auto` short of memory) the recycle is a gap as before.
"""

from __future__ import annotations

import asyncio
import signal

import pytest
import yaml

from tests.integration.test_metrics import scrape, value
from tests.support.node import NodeProcess
from tests.support.traffic import Traffic

STAMPED = "tests.support.backends:Stamped"  # its model version names its process
FAILING = "tests.support.backends:FailingLoad"
SERVING = {"queue": {"max_pending": 2}}


def dispatches(node: NodeProcess) -> list[dict]:
    """job_dispatched and worker_switched lines, in the order the supervisor wrote them."""
    return [e for e in node.events() if e.get("event") in ("job_dispatched", "worker_switched")]


def overlap_count(node: NodeProcess, result: str) -> float:
    return value(scrape(node), "gpu_server_worker_overlap", "gpu_server_worker_overlap_total", result=result)


async def delivered(receiver, job_ids: list[str]) -> dict[str, dict[str, str]]:
    """Every job's callback fields (each must arrive)."""
    return {job_id: (await receiver.await_callback(job_id))[0].fields for job_id in job_ids}


def ran_on(node: NodeProcess, pid: int) -> int:
    return sum(1 for e in node.events("job_dispatched") if e["worker_pid"] == pid)


def check_each_callback_names_the_worker_that_ran_it(node: NodeProcess, callbacks: dict, old_pid: int) -> int:
    """Jobs dispatched before the switch ran on the old worker, those after on the new one,
    and every callback carries the version of its worker. Returns the new worker's pid."""
    versions = {e["pid"]: e["model_version"] for e in node.events("worker_ready") if e["process"] == "supervisor"}
    lines = dispatches(node)
    (switch,) = [i for i, e in enumerate(lines) if e["event"] == "worker_switched"]
    new_pid = lines[switch]["pid"]
    assert lines[switch]["previous_pid"] == old_pid and versions[old_pid] != versions[new_pid]
    for i, line in enumerate(lines):
        if line["event"] == "job_dispatched" and line["job_id"] in callbacks:
            assert line["worker_pid"] == (old_pid if i < switch else new_pid), line
            assert callbacks[line["job_id"]]["model_version"] == versions[line["worker_pid"]], line
    assert {cb["model_version"] for cb in callbacks.values()} == {versions[old_pid], versions[new_pid]}
    return new_pid


async def test_sigusr1_under_steady_traffic_switches_workers_without_a_single_503(tmp_path, receiver, http):
    # auto with no margin: the real measurement (psutil, a CPU worker) says yes anywhere.
    # max_restarts 0: a counted restart would end the node.
    worker = {"backend": STAMPED, "overlap": "auto", "overlap_margin_bytes": 0, "max_restarts": 0}
    node = NodeProcess(tmp_path, receiver.url, {**SERVING, "worker": worker}).start()
    try:
        old_pid = node.worker_pid()
        # Jobs longer than the pace: the node is mostly busy, so the switch mostly waits for one.
        async with Traffic(http, node.base_url, "overlap-usr1", job_config={"steps": 40}) as traffic:
            await traffic.until(lambda: len(traffic.accepted) >= 3, what="jobs before the recycle")
            node.signal(signal.SIGUSR1)
            switched = await asyncio.to_thread(node.wait_event, "worker_switched")
            await traffic.until(lambda: ran_on(node, switched["pid"]) >= 2, what="jobs on the new worker")
        assert traffic.not_ready == [] and traffic.tryon[202] == len(traffic.accepted)
        assert traffic.next_seen and traffic.next_seen[0]["state"] == "starting"  # /gpu/status showed it load

        callbacks = await delivered(receiver, traffic.accepted)
        assert all(cb["status"] == "succeeded" for cb in callbacks.values())
        new_pid = check_each_callback_names_the_worker_that_ran_it(node, callbacks, old_pid)

        (decision,) = node.events("worker_overlap_decision")
        assert decision["overlap"] is True and decision["memory"] == "ram" and decision["footprint_bytes"] > 0
        exited = await asyncio.to_thread(node.wait_event, "worker_exited", pid=old_pid)
        assert exited["kill_reason"] == "recycle" and exited["level"] == "INFO"
        status = node.gpu_status()["worker"]
        assert status["pid"] == new_pid and status["next"] is None and status["restarts"] == 0
        assert overlap_count(node, "switched") == 1 and overlap_count(node, "failed") == 0
    finally:
        assert node.stop() == 0, node.tail()


async def test_sighup_with_new_model_settings_under_steady_traffic_switches_without_a_503(tmp_path, receiver, http):
    overrides = {**SERVING, "worker": {"overlap": "always"}, "model": {"version": "v1"}}
    node = NodeProcess(tmp_path, receiver.url, overrides).start()
    try:
        old_pid = node.worker_pid()
        async with Traffic(http, node.base_url, "overlap-hup") as traffic:  # no steps: default_steps applies
            await traffic.until(lambda: len(traffic.accepted) >= 3, what="jobs before the reload")
            config = {**node.config, "model": {"version": "v2", "reference": {"default_steps": 3}}}
            node.config_path.write_text(yaml.safe_dump(config))
            node.signal(signal.SIGHUP)
            switched = await asyncio.to_thread(node.wait_event, "worker_switched")
            await traffic.until(lambda: ran_on(node, switched["pid"]) >= 2, what="jobs on the new worker")
        assert traffic.not_ready == []
        reloaded = node.events("config_reloaded")[0]
        assert reloaded["recycle_worker"] is True and "model.reference.default_steps" in reloaded["changed"]

        callbacks = await delivered(receiver, traffic.accepted)
        assert all(cb["status"] == "succeeded" for cb in callbacks.values())
        check_each_callback_names_the_worker_that_ran_it(node, callbacks, old_pid)
        assert switched["model_version"] == "v2"
        code, version = node.get("/version")
        assert version["model_version"] == "v2"
        assert not node.events("worker_overlap_decision")  # always: nothing to decide
    finally:
        assert node.stop() == 0, node.tail()


async def test_a_next_worker_that_cannot_load_leaves_the_current_one_serving(tmp_path, receiver, http):
    overrides = {**SERVING, "worker": {"overlap": "always"}, "model": {"version": "v1"}}
    node = NodeProcess(tmp_path, receiver.url, overrides).start()
    try:
        pid = node.worker_pid()
        async with Traffic(http, node.base_url, "overlap-failing-next") as traffic:
            await traffic.until(lambda: len(traffic.accepted) >= 2, what="jobs before the reload")
            config = {**node.config, "worker": {**node.config["worker"], "backend": FAILING}}
            node.config_path.write_text(yaml.safe_dump(config))
            node.signal(signal.SIGHUP)
            failed = await asyncio.to_thread(node.wait_event, "worker_recycle_failed")
            served = len(traffic.accepted)
            await traffic.until(lambda: len(traffic.accepted) >= served + 2, what="jobs after the failed recycle")
        assert traffic.not_ready == []
        assert failed["current_pid"] == pid and "weights.safetensors is missing" in failed["error"]
        assert node.events("worker_startup_failed")  # the next worker said why

        callbacks = await delivered(receiver, traffic.accepted)
        assert {(cb["status"], cb["model_version"]) for cb in callbacks.values()} == {("succeeded", "v1")}
        assert {e["worker_pid"] for e in node.events("job_dispatched")} == {pid}
        status = node.gpu_status()["worker"]
        assert status["pid"] == pid and status["next"] is None and status["restarts"] == 0
        assert overlap_count(node, "failed") == 1 and overlap_count(node, "switched") == 0
    finally:
        assert node.stop() == 0, node.tail()


@pytest.mark.parametrize(
    "worker",
    [{"overlap": "never"}, {"overlap": "auto", "overlap_margin_bytes": 2**50}],  # a margin no machine has
    ids=["never", "auto-short-of-memory"],
)
async def test_without_overlap_a_recycle_takes_the_node_out_of_service_as_before(tmp_path, receiver, http, worker):
    node = NodeProcess(tmp_path, receiver.url, {**SERVING, "worker": worker}).start()
    try:
        pid = node.worker_pid()
        async with Traffic(http, node.base_url, f"overlap-gap-{worker['overlap']}") as traffic:
            await traffic.until(lambda: len(traffic.accepted) >= 2, what="jobs before the recycle")
            node.signal(signal.SIGUSR1)
            ready = await asyncio.to_thread(node.wait_event, "worker_ready", generation=2, process="supervisor")
            await traffic.until(lambda: ran_on(node, ready["pid"]) >= 1, what="a job on the new worker")
        health = {why for _, route, why in traffic.not_ready if route == "/health"}
        assert health and health <= {"restarting", "loading"}, traffic.not_ready
        assert traffic.tryon[503] > 0
        callbacks = await delivered(receiver, traffic.accepted)
        assert all(cb["status"] == "succeeded" for cb in callbacks.values())
        assert not node.events("worker_switched") and not traffic.next_seen
        assert (await asyncio.to_thread(node.wait_event, "worker_exited", pid=pid))["kill_reason"] == "recycle"
        if worker["overlap"] == "auto":
            (decision,) = node.events("worker_overlap_decision")
            assert decision["overlap"] is False and "free ram memory" in decision["why"]
            assert overlap_count(node, "fell_back") == 1
        else:
            assert not node.events("worker_overlap_decision") and overlap_count(node, "fell_back") == 0
    finally:
        assert node.stop() == 0, node.tail()
